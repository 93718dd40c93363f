"""The managed secrets: ``plan``, ``secrets list``, ``rotate``, ``status``, ``rollback``."""

from __future__ import annotations

import argparse
import re
from typing import Any

from lifecycle_cli.client import segment
from lifecycle_cli.context import (
    Context,
    Exit,
    count,
    listing,
    secret_name,
    short,
    vault_option,
    version,
)
from lifecycle_cli.output import when, yes

#: The secrets listing's largest page (GET /api/secrets' ``limit``).
SECRETS_PAGE = 100
#: How often ``rotate --wait`` reads the secret's status.
POLL_SECONDS = 1.0


def within(text: str) -> int:
    """``--within``: days, as ``7d``, ``2w`` or ``7`` (1-365)."""
    match = re.fullmatch(r"(\d{1,3})\s*([dw]?)", text.strip().lower())
    days = (int(match[1]) * (7 if match[2] == "w" else 1)) if match else 0
    if not 1 <= days <= 365:
        raise argparse.ArgumentTypeError(f"{text!r}: days from 1 to 365, as 7d, 2w or 7")
    return days


def add_commands(commands: Any, common: argparse.ArgumentParser) -> None:
    plan = commands.add_parser("plan", parents=[common], help="what rotates or expires soon")
    plan.add_argument("--within", type=within, default=7, help="how far ahead: 7d (default), 2w, 30")
    vault_option(plan, "default: every vault")
    plan.set_defaults(run=plan_)

    secrets = commands.add_parser("secrets", parents=[common], help="the managed secrets")
    listing = secrets.add_subparsers(dest="action", required=True).add_parser(
        "list", parents=[common], help="every managed secret, its policy, due date and state"
    )
    vault_option(listing, "default: every vault")
    listing.add_argument("--limit", type=count, help="at most this many (default: all)")
    listing.set_defaults(run=secrets_list)

    rotate = commands.add_parser("rotate", parents=[common], help="rotate a secret now (queued)")
    rotate.add_argument("name", type=secret_name)
    vault_option(rotate, "required when the service manages several")
    rotate.add_argument("--dry-run", action="store_true", help="say whether it would rotate, and why")
    rotate.add_argument("--force", action="store_true", help="rotate even when it is not due")
    rotate.add_argument("--wait", action="store_true", help="wait until the rotation is done")
    rotate.add_argument("--timeout", type=count, default=120, help="seconds --wait waits (default 120)")
    rotate.set_defaults(run=rotate_)

    status = commands.add_parser("status", parents=[common], help="a secret's versions, policy and rotation")
    status.add_argument("name", type=secret_name)
    vault_option(status, "required when the service manages several")
    status.set_defaults(run=status_)

    rollback = commands.add_parser("rollback", parents=[common], help="make the previous value current again")
    rollback.add_argument("name", type=secret_name)
    vault_option(rollback, "required when the service manages several")
    rollback.add_argument(
        "--from-version", type=version, help="the version rolled back from (default current)"
    )
    rollback.set_defaults(run=rollback_)


def plan_(ctx: Context, args: argparse.Namespace) -> int:
    plan = ctx.client.call("GET", "rotation/plan", params={"within_days": args.within, "vault": args.vault})
    if ctx.out.json:
        ctx.out.document(plan)
        return Exit.OK
    rows = [
        [when(item.get("when")), item.get("event"), item.get("name"), item.get("vault"), _plan_detail(item)]
        for item in plan.get("items", [])
    ]
    title = f"Coming in the next {plan.get('within_days')} day(s), until {when(plan.get('until'))}"
    if rows:
        ctx.out.table(title, ["when", "event", "secret", "vault", "detail"], rows)
    else:
        ctx.out.line(f"{title}: nothing.")
    violations = plan.get("violations") or []
    if violations:
        ctx.out.table(
            "Policy violations (never rotated until fixed)",
            ["secret", "vault", "tag", "problem"],
            [[v.get("name"), v.get("vault"), v.get("tag"), v.get("problem")] for v in violations],
        )
    return Exit.OK


def _plan_detail(item: dict[str, Any]) -> str:
    if item.get("event") == "rotation":
        due = ", due now" if item.get("due_now") else ""
        return f"{item.get('reason')} ({item.get('rotator')}){due}"
    managed = "managed" if item.get("managed") else "unmanaged"
    return f"{'expired' if item.get('expired') else 'expires'} ({managed})"


def secrets_list(ctx: Context, args: argparse.Namespace) -> int:
    page = listing(
        ctx,
        "secrets",
        {"vault": args.vault},
        limit=args.limit,
        page_size=SECRETS_PAGE,
        what="the managed secrets",
    )
    if ctx.out.json:
        ctx.out.document(page)
        return Exit.OK
    rows = []
    for item in page["items"]:
        policy = item.get("policy") or {}
        state = item.get("state") or {}
        violation = item.get("violation")
        rows.append([
            item.get("name"), item.get("vault"), policy.get("kind"), policy.get("rotator"),
            short(item.get("version")), when(item.get("expires")), when(item.get("next_due")),
            yes(item.get("due_now")),
            state.get("status") if not violation else f"violation: {violation.get('tag')}",
        ])  # fmt: skip
    columns = ["secret", "vault", "kind", "rotator", "version", "expires", "next due", "due", "state"]
    ctx.out.table(f"{len(rows)} managed secret(s)", columns, rows)
    if page.get("continuation"):
        ctx.out.note(f"more after these: --limit shows more (continuation {page['continuation']})")
    return Exit.OK


def rotate_(ctx: Context, args: argparse.Namespace) -> int:
    path = f"secrets/{segment(args.name)}/rotate"
    answer = ctx.client.call(
        "POST", path, params={"vault": args.vault}, body={"dry_run": args.dry_run, "force": args.force}
    )
    if args.dry_run:
        if ctx.out.json:
            ctx.out.document(answer)
        else:
            verdict = "would rotate" if answer.get("would_rotate") else "would not rotate"
            ctx.out.line(f"{args.name}: {verdict}: {answer.get('reason')}")
            ctx.out.fields(None, [
                ("current version", answer.get("current_version")), ("rotator", answer.get("rotator")),
                ("next due", when(answer.get("next_due"))), ("expires", when(answer.get("expires"))),
            ])  # fmt: skip
        return Exit.OK
    rotation = answer.get("joined") or answer.get("rotation_id")
    if not ctx.out.json:
        joined = f", joined to {answer['joined']}" if answer.get("joined") else ""
        ctx.out.line(f"{args.name}: rotation {answer.get('rotation_id')} {answer.get('status')}{joined}")
    if not args.wait:
        if ctx.out.json:
            ctx.out.document(answer)
        return Exit.OK
    return _wait_for(ctx, args, rotation, answer)


def _wait_for(ctx: Context, args: argparse.Namespace, rotation: str, queued: dict[str, Any]) -> int:
    """Read the secret's status until its last rotation is ``rotation`` (done), or until the timeout.
    A failed attempt is shown and waited past: the queue tries again (five attempts in all)."""
    deadline = ctx.clock() + args.timeout
    status: dict[str, Any] = {}
    with ctx.out.progress(f"waiting for rotation {rotation}") as update:
        while True:
            status = ctx.client.call(
                "GET", f"secrets/{segment(args.name)}/status", params={"vault": args.vault}
            )
            recorded = (status.get("last_rotation") or {}).get("recorded") or {}
            if recorded.get("rotation_id") == rotation:
                break
            failure = status.get("last_failure") or {}
            if failure.get("rotation_id") == rotation:
                update(
                    f"rotation {rotation}: attempt failed ({failure.get('error_class')}); the queue retries"
                )
            if ctx.clock() >= deadline:
                if ctx.out.json:
                    ctx.out.document({**queued, "done": False, "status_now": status})
                else:
                    ctx.out.note(
                        f"rotation {rotation} not done after {args.timeout} s; see: status {args.name}"
                    )
                return Exit.TROUBLE
            ctx.sleep(POLL_SECONDS)
    if ctx.out.json:
        ctx.out.document({**queued, "done": True, "version": recorded.get("version")})
    else:
        ctx.out.line(
            f"{args.name}: rotated to version {recorded.get('version')} "
            f"(previous {recorded.get('previous_version')})"
        )
    return Exit.OK


def status_(ctx: Context, args: argparse.Namespace) -> int:
    status = ctx.client.call("GET", f"secrets/{segment(args.name)}/status", params={"vault": args.vault})
    if ctx.out.json:
        ctx.out.document(status)
        return Exit.OK
    policy = status.get("policy") or {}
    state = status.get("state") or {}
    last = (status.get("last_rotation") or {}).get("recorded") or {}
    failure = status.get("last_failure") or {}
    stalled = status.get("stalled") or {}
    violation = status.get("violation") or {}
    ctx.out.fields(f"{status.get('name')} in {status.get('vault')}", [
        ("version", status.get("version") or "(current version disabled)"),
        ("created", when(status.get("created"))), ("expires", when(status.get("expires"))),
        ("enabled", yes(status.get("enabled"))), ("managed", yes(status.get("managed"))),
        ("policy", _policy_text(policy) if policy else None),
        ("violation", f"{violation.get('tag')}: {violation.get('problem')}" if violation else None),
        ("next due", when(status.get("next_due"))), ("due now", yes(status.get("due_now"))),
        ("state", state.get("status")), ("state error", state.get("last_error")),
        ("last rotation", f"{when(last.get('time'))} to {last.get('version')} ({last.get('rotation_id')})"
         if last else None),
        ("last failure", f"{when(failure.get('time'))} {failure.get('error_class')} at {failure.get('step')}"
         if failure else None),
        ("stalled", f"since {when(stalled.get('since'))}: {stalled.get('reason')}" if stalled else None),
        ("retiring", ", ".join(f"{short(r.get('version'))} after {when(r.get('after'))}"
                               for r in status.get("retirements") or [])),
    ])  # fmt: skip
    return Exit.OK


def _policy_text(policy: dict[str, Any]) -> str:
    parts = [
        f"{policy.get('kind')} every {policy.get('rotation_interval_days')} day(s) by {policy.get('rotator')}"
    ]
    if policy.get("owner"):
        parts.append(f"owner {policy['owner']}")
    if policy.get("validity_days"):
        parts.append(f"valid {policy['validity_days']} day(s)")
    return ", ".join(parts)


def rollback_(ctx: Context, args: argparse.Namespace) -> int:
    done = ctx.client.call(
        "POST", f"secrets/{segment(args.name)}/rollback", params={"vault": args.vault},
        body={"from_version": args.from_version} if args.from_version else {},
    )  # fmt: skip
    if ctx.out.json:
        ctx.out.document(done)
    else:
        ctx.out.line(
            f"{done.get('name')}: rolled back from {done.get('rolled_back_from')}: new version "
            f"{done.get('version')} restores {done.get('restored_version')} "
            f"(rollback {done.get('rollback_id')})"
        )
    return Exit.OK
