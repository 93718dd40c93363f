"""``secret-lifecycle``: operate the secret lifecycle service from a terminal, through its HTTP API.

    secret-lifecycle plan --within 7d
    secret-lifecycle secrets list
    secret-lifecycle rotate NAME [--dry-run] [--force] [--wait]
    secret-lifecycle status NAME
    secret-lifecycle rollback NAME
    secret-lifecycle revocations list|show|request|approve|reject|cancel|execute|review ...
    secret-lifecycle audit query|summary|verify|actor|tail [--follow]
    secret-lifecycle compliance report [--from D] [--to D] [--html FILE]

Locally it talks to the stack ``make run`` started (the port in local.settings.json) as a dev principal;
against Azure, give ``--url`` and ``--client-id`` (or their SECRET_LIFECYCLE_* variables) and sign in with
``az login``. ``--json`` prints the API's documents for scripts. Exit codes: 0 done, 1 done with bad news
(verify found breaks, a waited rotation did not finish), 2 usage (or a parameter the service refused), 3
the service is unavailable (nothing was changed unless the message says so), 4 not signed in or lacking
the role, 5 refused by the state (not found, a conflict). docs/cli.md has the rest.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO

from lifecycle_cli import audit, compliance, revocations, secrets
from lifecycle_cli.client import ServiceClient, ServiceError, Unreachable
from lifecycle_cli.connection import Options, SignInError, TokenCredential, UsageError, parse_roles, resolve
from lifecycle_cli.context import Context, Exit
from lifecycle_cli.output import Output

PROG = "secret-lifecycle"


def main(
    argv: Sequence[str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    stdout: IO[str] | None = None,
    stderr: IO[str] | None = None,
    credential: Callable[[], TokenCredential] | None = None,
) -> int:
    """Run one command; returns its exit code (argparse exits 2 itself on bad arguments)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    out = Output(json_mode=getattr(args, "json", False), stdout=stdout, stderr=stderr)
    try:
        roles = parse_roles(args.roles) if getattr(args, "roles", None) is not None else None
        options = Options(
            url=getattr(args, "url", None), settings=getattr(args, "settings", None),
            client_id=getattr(args, "client_id", None), function_key=getattr(args, "function_key", None),
            as_=getattr(args, "as_", None), roles=roles,
        )  # fmt: skip
        target = resolve(options, env, credential)
        return int(args.run(Context(ServiceClient(target), out), args))
    except UsageError as err:
        out.note(f"error: {err}")
        return Exit.USAGE
    except SignInError as err:
        out.note(f"not signed in: {err}")
        return Exit.DENIED
    except Unreachable as err:
        out.note(f"unavailable: {err} (is `make run` running? --url names another service)")
        return Exit.UNAVAILABLE
    except ServiceError as err:
        return _refused(out, err)
    except KeyboardInterrupt:
        out.note("interrupted")
        return 130


def _refused(out: Output, err: ServiceError) -> int:
    """The service's refusal, said, and its exit code."""
    status, problem = err.status, err.problem
    out.note(f"refused: {err.describe()}")
    if status == 500 and problem.get("changed"):
        out.note("the change WAS made, only its record failed: do not repeat it (ids above)")
    if status in (401, 403):
        return Exit.DENIED
    if status == 400:
        return Exit.USAGE
    if 400 <= status < 500:
        return Exit.REFUSED
    return Exit.UNAVAILABLE


def build_parser() -> argparse.ArgumentParser:
    common = _common_options()
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Operate the secret lifecycle service from a terminal, through its HTTP API.",
        epilog="Exit codes: 0 done, 1 bad news (verify breaks, a waited rotation failed), 2 usage, "
        "3 unavailable, 4 not signed in or no role, 5 refused (not found, conflict).",
        parents=[common],
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    secrets.add_commands(commands, common)
    revocations.add_commands(commands, common)
    audit.add_commands(commands, common)
    compliance.add_commands(commands, common)
    return parser


def _common_options() -> argparse.ArgumentParser:
    """The options every command takes, before or after its name (SUPPRESS: a later parser's default
    never overrides what an earlier one read)."""
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("where and who")
    group.add_argument("--url", default=argparse.SUPPRESS, help="the app (default: the local stack's)")
    group.add_argument(
        "--settings", type=Path, default=argparse.SUPPRESS,
        help="the local.settings.json whose Host.LocalHttpPort is the local app's port "
        "(default ./local.settings.json)",
    )  # fmt: skip
    group.add_argument(
        "--client-id", default=argparse.SUPPRESS,
        help="Azure: the app's Entra registration (azd env get-value AUTH_CLIENT_ID); a token from az login",
    )  # fmt: skip
    group.add_argument(
        "--function-key", default=argparse.SUPPRESS,
        help="Azure: the function key (better: SECRET_LIFECYCLE_FUNCTION_KEY, kept out of the shell history)",
    )  # fmt: skip
    group.add_argument(
        "--as",
        dest="as_",
        default=argparse.SUPPRESS,
        help="local stack: who you are (default local-operator)",
    )
    group.add_argument(
        "--roles", default=argparse.SUPPRESS, help="local stack: your roles, comma-separated (default all)"
    )
    common.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="print JSON for scripts"
    )
    return common


if __name__ == "__main__":
    sys.exit(main())
