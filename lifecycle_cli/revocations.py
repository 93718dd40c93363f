"""Emergency revocation: ``revocations list|show|request|approve|reject|cancel|execute|review``."""

from __future__ import annotations

import argparse
from typing import Any

from lifecycle_cli.client import segment
from lifecycle_cli.context import (
    Context,
    Exit,
    count,
    listing,
    revocation_id,
    secret_name,
    text_of,
    vault_option,
    version,
)
from lifecycle_cli.output import when, yes
from shared.domain.revocation import MAX_COMMENT, MAX_JUSTIFICATION, Reason, Severity, Status

#: The revocations listing's largest page (GET /api/revocations' ``limit``).
REVOCATIONS_PAGE = 100


def add_commands(commands: Any, common: argparse.ArgumentParser) -> None:
    group = commands.add_parser("revocations", parents=[common], help="emergency revocation requests")
    actions = group.add_subparsers(dest="action", required=True)

    listing = actions.add_parser("list", parents=[common], help="the requests, newest first")
    listing.add_argument("--status", choices=[s.value for s in Status])
    listing.add_argument("--secret", type=secret_name, help="only this secret's")
    vault_option(listing, "default: every vault")
    listing.add_argument("--limit", type=count, help="at most this many (default: all)")
    listing.set_defaults(run=list_)

    show = actions.add_parser("show", parents=[common], help="one request, its approvals and result")
    show.add_argument("id", type=revocation_id)
    show.set_defaults(run=show_)

    request = actions.add_parser("request", parents=[common], help="ask for a secret's revocation")
    request.add_argument("name", type=secret_name)
    vault_option(request, "required when the service manages several")
    request.add_argument("--reason", required=True, choices=[r.value for r in Reason])
    request.add_argument("--severity", required=True, choices=[s.value for s in Severity])
    request.add_argument("--justification", required=True, type=text_of(MAX_JUSTIFICATION))
    request.add_argument(
        "--version", dest="versions", action="append", type=version,
        help="a version to disable (repeat it; default the current one)",
    )  # fmt: skip
    request.add_argument("--replace", action="store_true", help="also make a new value current")
    request.add_argument("--break-glass", action="store_true", help="execute at once (Secrets.BreakGlass)")
    request.set_defaults(run=request_)

    for name, needs, what in (
        ("approve", False, "approve a request (not your own)"),
        ("reject", True, "reject a request"),
        ("review", True, "review a break-glass execution"),
    ):
        decide = actions.add_parser(name, parents=[common], help=what)
        decide.add_argument("id", type=revocation_id)
        decide.add_argument("--comment", required=needs, type=text_of(MAX_COMMENT))
        decide.set_defaults(run=decide_, decision=name)
    for name, what in (("cancel", "cancel your pending request"), ("execute", "execute an approved request")):
        act = actions.add_parser(name, parents=[common], help=what)
        act.add_argument("id", type=revocation_id)
        act.set_defaults(run=decide_, decision=name, comment=None)


def list_(ctx: Context, args: argparse.Namespace) -> int:
    params = {"status": args.status, "secret_name": args.secret, "vault": args.vault}
    page = listing(
        ctx,
        "revocations",
        params,
        limit=args.limit,
        page_size=REVOCATIONS_PAGE,
        what="the revocation requests",
    )
    if ctx.out.json:
        ctx.out.document(page)
        return Exit.OK
    rows = [
        [r.get("id"), r.get("secret_name"), r.get("vault"), r.get("status"), r.get("severity"),
         r.get("reason"), f"{len(r.get('approvals') or [])}/{r.get('required_approvals')}",
         r.get("requested_by"), when(r.get("requested_at")), when(r.get("expires_at"))]
        for r in page["items"]
    ]  # fmt: skip
    columns = ["id", "secret", "vault", "status", "severity", "reason", "approvals", "by", "at", "expires"]
    ctx.out.table(f"{len(rows)} revocation request(s)", columns, rows)
    unreadable = page.get("unreadable") or []
    if unreadable:
        ctx.out.table(
            "Requests that cannot be shown (on record as STATE_TAMPERED, and a finding)",
            ["id", "secret", "vault", "problem"],
            [[u.get("id"), u.get("secret_name"), u.get("vault"), u.get("problem")] for u in unreadable],
        )
    if page.get("continuation"):
        ctx.out.note("more after these: --limit shows more")
    return Exit.OK


def show_(ctx: Context, args: argparse.Namespace) -> int:
    return _shown(ctx, ctx.client.call("GET", f"revocations/{segment(args.id)}"))


def request_(ctx: Context, args: argparse.Namespace) -> int:
    body: dict[str, Any] = {
        "secret_name": args.name, "reason": args.reason, "severity": args.severity,
        "justification": args.justification, "replace": args.replace, "break_glass": args.break_glass,
    }  # fmt: skip
    if args.versions:
        body["versions"] = args.versions
    return _shown(ctx, ctx.client.call("POST", "revocations", params={"vault": args.vault}, body=body))


def decide_(ctx: Context, args: argparse.Namespace) -> int:
    body = {"comment": args.comment} if args.comment is not None else {}
    return _shown(ctx, ctx.client.call("POST", f"revocations/{segment(args.id)}/{args.decision}", body=body))


def _shown(ctx: Context, revocation: dict[str, Any]) -> int:
    if ctx.out.json:
        ctx.out.document(revocation)
        return Exit.OK
    result = revocation.get("result") or {}
    errors = result.get("errors") or {}
    ctx.out.fields(f"revocation {revocation.get('id')}: {revocation.get('status')}", [
        ("secret", f"{revocation.get('secret_name')} in {revocation.get('vault')}"),
        ("reason", f"{revocation.get('reason')}, severity {revocation.get('severity')}"),
        ("justification", revocation.get("justification")),
        ("versions", ", ".join(revocation.get("versions") or []) or "the current one"),
        ("replace", yes(revocation.get("replace"))), ("break-glass", yes(revocation.get("break_glass"))),
        ("requested", f"by {revocation.get('requested_by')} at {when(revocation.get('requested_at'))}"),
        ("expires", when(revocation.get("expires_at"))),
        ("approvals", f"{len(revocation.get('approvals') or [])} of {revocation.get('required_approvals')}: "
         + ", ".join(_decision(d) or "" for d in revocation.get("approvals") or [])),
        ("rejected", _decision(revocation.get("rejection"))),
        ("cancelled", _decision(revocation.get("cancellation"))),
        ("executed", f"by {revocation.get('executed_by')} at {when(revocation.get('executed_at'))}"
         if revocation.get("executed_by") else None),
        ("disabled", ", ".join(result.get("disabled_versions") or [])),
        ("new version", result.get("new_version")),
        ("not disabled", ", ".join(f"{v} ({e})" for v, e in errors.items())),
        ("review", "required" if revocation.get("review_required") and not revocation.get("review") else
         _decision(revocation.get("review"))),
    ])  # fmt: skip
    return Exit.OK


def _decision(decision: dict[str, Any] | None) -> str | None:
    if not decision:
        return None
    comment = f": {decision['comment']}" if decision.get("comment") else ""
    return f"{decision.get('by')} at {when(decision.get('at'))}{comment}"
