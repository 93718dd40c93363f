"""The audit trail: ``audit query|summary|verify|actor|tail [--follow]``."""

from __future__ import annotations

import argparse
import re
from collections import OrderedDict
from datetime import UTC, datetime, timedelta
from typing import Any

from lifecycle_cli.client import segment
from lifecycle_cli.context import Context, Exit, count, listing, secret_name, vault_option
from lifecycle_cli.output import when
from shared.domain.audit import Action

#: The longest actor id the service takes (GET /api/audit/actors/{actor_id}).
MAX_ACTOR_ID = 256
#: GET /api/audit's largest page.
AUDIT_PAGE = 500
#: How far back each ``tail --follow`` read reaches behind the newest record seen: records are stamped
#: when written, and one written by another instance a moment earlier may be committed a moment later.
FOLLOW_OVERLAP = timedelta(minutes=2)
#: Ids remembered so the overlap prints nothing twice (far more than two minutes of a busy trail).
FOLLOW_MEMORY = 20_000


def moment(text: str) -> str:
    """``--since``/``--until``: ISO 8601 with a zone, a date, or a span back from now (``90m``, ``24h``,
    ``7d``). The service checks the first two."""
    match = re.fullmatch(r"(\d{1,6})([mhd])", text.strip())
    if match is None:
        return text
    unit = {"m": "minutes", "h": "hours", "d": "days"}[match[2]]
    try:
        return (datetime.now(UTC) - timedelta(**{unit: int(match[1])})).isoformat()
    except OverflowError:
        raise argparse.ArgumentTypeError(f"{text!r} reaches too far back") from None


def add_commands(commands: Any, common: argparse.ArgumentParser) -> None:
    group = commands.add_parser("audit", parents=[common], help="the tamper-evident audit trail")
    actions = group.add_subparsers(dest="action", required=True)

    query = actions.add_parser("query", parents=[common], help="records, newest first")
    _filters(query)
    query.add_argument("--actor", help="only this caller's (their id)")
    query.add_argument("--since", type=moment, help="from: ISO 8601 with a zone, a date, or 24h / 7d back")
    query.add_argument("--until", type=moment, help="before: as --since")
    query.add_argument("--limit", type=count, default=50, help="at most this many (default 50)")
    query.set_defaults(run=query_)

    summary = actions.add_parser("summary", parents=[common], help="counts by action and result, failures")
    summary.add_argument("--secret", type=secret_name, help="only this secret's")
    vault_option(summary, "default: every vault")
    summary.add_argument("--days", type=count, default=30, help="how many days back (default 30)")
    summary.set_defaults(run=summary_)

    verify = actions.add_parser(
        "verify", parents=[common], help="check the chains and digests; exit 1 on a break"
    )
    verify.add_argument("--secret", type=secret_name, help="only this secret's chain (verified now)")
    vault_option(verify, "with --secret")
    verify.add_argument(
        "--fresh", action="store_true", help="verify the whole trail now, not the last daily run"
    )
    verify.set_defaults(run=verify_)

    actor = actions.add_parser("actor", parents=[common], help="an actor's risk score, signals, records")
    actor.add_argument("actor_id", type=actor_id, help="their id as records name it, or vault:<vault>")
    actor.add_argument("--limit", type=count, default=20, help="how many of their records (default 20)")
    actor.set_defaults(run=actor_)

    tail = actions.add_parser("tail", parents=[common], help="the newest records; --follow for new ones")
    _filters(tail)
    tail.add_argument("-n", "--lines", type=count, default=20, help="how many to show first (default 20)")
    tail.add_argument("-f", "--follow", action="store_true", help="go on printing new records until Ctrl-C")
    tail.add_argument("--interval", type=float, default=2.0, help="seconds between reads (default 2)")
    tail.set_defaults(run=tail_)


def _filters(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--secret", type=secret_name, help="only this secret's (its chain's order)")
    parser.add_argument(
        "--action", choices=[a.value for a in Action], metavar="ACTION", help="e.g. SECRET_ROTATED"
    )
    vault_option(parser, "default: every vault")


def query_(ctx: Context, args: argparse.Namespace) -> int:
    params = {"secret_name": args.secret, "action": args.action, "actor": args.actor, "since": args.since,
              "until": args.until, "vault": args.vault}  # fmt: skip
    page = listing(ctx, "audit", params, limit=args.limit, page_size=AUDIT_PAGE, what="the audit trail")
    if ctx.out.json:
        ctx.out.document(page)
        return Exit.OK
    _records(ctx, f"{len(page['items'])} record(s), newest first", page["items"])
    if page.get("continuation"):
        ctx.out.note("more after these: a larger --limit shows more")
    return Exit.OK


def _records(ctx: Context, title: str | None, records: list[dict[str, Any]]) -> None:
    ctx.out.table(
        title,
        ["time", "action", "result", "secret", "version", "actor", "chain"],
        [[when(r.get("time")), r.get("action"), r.get("result"), r.get("secret_name"),
          (r.get("version") or "")[:12], r.get("actor_id"), f"{r.get('chain')}#{r.get('seq')}"]
         for r in records],
    )  # fmt: skip


def summary_(ctx: Context, args: argparse.Namespace) -> int:
    summary = ctx.client.call(
        "GET", "audit/summary", params={"secret_name": args.secret, "days": args.days, "vault": args.vault}
    )
    if ctx.out.json:
        ctx.out.document(summary)
        return Exit.OK
    last = summary.get("last_rotation") or {}
    failures = summary.get("failures") or {}
    ctx.out.fields(f"{summary.get('total')} record(s) since {when(summary.get('since'))}", [
        ("secret", summary.get("secret_name")),
        ("last rotation", f"{when(last.get('time'))} {last.get('secret_name')} {last.get('version')}"
         if last else "none"),
        ("failures", failures.get("count", 0)),
    ])  # fmt: skip
    by_action = summary.get("by_action") or {}
    results = sorted({result for counts in by_action.values() for result in counts})
    ctx.out.table(
        None, ["action", *results],
        [[action, *(counts.get(result, "") for result in results)]
         for action, counts in sorted(by_action.items())],
    )  # fmt: skip
    latest = failures.get("latest") or []
    if latest:
        ctx.out.table(
            "Latest failures",
            ["time", "action", "secret", "error", "correlation id"],
            [[when(f.get("time")), f.get("action"), f.get("secret_name"), f.get("error"),
              f.get("correlation_id")] for f in latest],
        )  # fmt: skip
    return Exit.OK


def verify_(ctx: Context, args: argparse.Namespace) -> int:
    params = {"secret_name": args.secret, "vault": args.vault, "fresh": args.fresh or None}
    with ctx.out.progress("verifying the audit trail"):
        report = ctx.client.call("GET", "audit/verify", params=params)
    broken = bool(report.get("breaks"))
    if ctx.out.json:
        ctx.out.document(report)
        return Exit.TROUBLE if broken else Exit.OK
    verified = f", verified at {when(report['verified_at'])}" if report.get("verified_at") else ""
    latest_digest = when(report.get("latest_digest")) or "never"
    ctx.out.line(
        f"{report.get('status')}: {report.get('chains')} chain(s), {report.get('records')} record(s), "
        f"{report.get('digests')} digest(s); latest digest {latest_digest}{verified}"
    )
    if broken:
        ctx.out.table(
            f"{len(report['breaks'])} break(s)", ["chain", "kind", "seq", "detail"],
            [[b.get("chain"), b.get("kind"), b.get("seq"), b.get("detail")] for b in report["breaks"]],
        )  # fmt: skip
    acknowledged = report.get("acknowledged") or []
    if acknowledged:
        ctx.out.note(f"{len(acknowledged)} break(s) acknowledged under an incident (not counted)")
    return Exit.TROUBLE if broken else Exit.OK


def actor_id(text: str) -> str:
    if not text.strip() or len(text) > MAX_ACTOR_ID or "/" in text:
        raise argparse.ArgumentTypeError(f"1-{MAX_ACTOR_ID} characters, no /")
    return text


def actor_(ctx: Context, args: argparse.Namespace) -> int:
    view = ctx.client.call("GET", f"audit/actors/{segment(args.actor_id)}", params={"limit": args.limit})
    if ctx.out.json:
        ctx.out.document(view)
        return Exit.OK
    verdict = "ABOVE the threshold" if view.get("above_threshold") else "below the threshold"
    ctx.out.line(
        f"{view.get('actor')}: risk score {view.get('score')} of {view.get('threshold')} ({verdict}) "
        f"over {view.get('window_hours')} h since {when(view.get('since'))}"
    )
    signals = view.get("signals") or []
    if signals:
        ctx.out.table(
            "Signals", ["time", "signal", "weight", "detail", "record"],
            [[when(h.get("time")), h.get("signal"), h.get("weight"), h.get("detail"), h.get("record_id")]
             for h in signals],
        )  # fmt: skip
    _records(ctx, "Newest records", (view.get("recent") or {}).get("items") or [])
    return Exit.OK


def tail_(ctx: Context, args: argparse.Namespace) -> int:
    """The newest ``--lines`` records, oldest first; with ``--follow``, each newer record as it comes, until
    interrupted. Each read asks for the records since the newest seen less FOLLOW_OVERLAP (one committed
    late by another instance is still found) and prints those newer than the first ones shown and not
    printed yet."""
    if args.interval < 0.5:
        ctx.out.note("--interval must be at least 0.5 seconds")
        return Exit.USAGE
    base = {"secret_name": args.secret, "action": args.action, "vault": args.vault}
    first = list(reversed(ctx.client.pages("audit", base, limit=args.lines, page_size=AUDIT_PAGE)["items"]))
    seen: OrderedDict[str, None] = OrderedDict()
    _show(ctx, first, seen)
    floor = newest = max((t for t in map(_time, first) if t is not None), default=None)
    try:
        while args.follow:
            ctx.sleep(args.interval)
            since = (newest - FOLLOW_OVERLAP).isoformat() if newest else None
            page = ctx.client.pages("audit", {**base, "since": since}, limit=None, page_size=AUDIT_PAGE)
            records = list(reversed(page["items"]))
            times = [t for t in map(_time, records) if t is not None]
            newest = max([*times, *([newest] if newest else [])], default=None)
            _show(ctx, [r for r in records if floor is None or (_time(r) or floor) > floor], seen)
    except KeyboardInterrupt:
        pass
    return Exit.OK


def _time(record: dict[str, Any]) -> datetime | None:
    try:
        stamped = datetime.fromisoformat(str(record.get("time")))
    except ValueError:
        return None
    return stamped if stamped.tzinfo is not None else None


def _show(ctx: Context, records: list[dict[str, Any]], seen: OrderedDict[str, None]) -> None:
    """Print the records (oldest first) not printed yet, and remember them."""
    for record in records:
        key = str(record.get("id"))
        if key in seen:
            continue
        seen[key] = None
        if len(seen) > FOLLOW_MEMORY:
            seen.popitem(last=False)
        if ctx.out.json:
            ctx.out.json_line(record)
            continue
        secret = f" {record.get('secret_name')}" if record.get("secret_name") else ""
        ctx.out.line(
            f"{when(record.get('time'))} {record.get('action')} {record.get('result')}{secret} "
            f"by {record.get('actor_id')}"
        )
