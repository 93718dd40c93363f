"""Operator command line: verify the audit trail (and seal a digest) from a terminal.

    python -m shared.entrypoints.cli verify [--secret-name NAME [--vault V]] [--json] [--settings FILE]
    python -m shared.entrypoints.cli digest [--settings local.settings.json]
    python -m shared.entrypoints.cli repair (--secret-name NAME | --service) [--vault V] --operator ID
        --reason TEXT

``repair`` re-derives a chain's head from its records (after somebody deleted or rewound the head row,
which stops every append to that chain); it refuses unless the chain's records verify and reach every
position a digest sealed, and it leaves a CHAIN_REPAIRED record naming the operator.

Settings come from the environment (the same names as the app); ``--settings`` loads the ``Values`` of a
local.settings.json first without overriding the environment. Against Azure, sign in with ``az login``:
DefaultAzureCredential uses the operator's identity, which needs read access to the audit table and to the
audit MAC key in Key Vault. Exit status: 0 intact, 1 breaks found, 2 usage error, 3 could not verify
(settings, storage or Key Vault).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path

from shared.bootstrap import Container
from shared.config import ConfigurationError, Settings
from shared.domain.audit import Actor, ActorType
from shared.domain.errors import Conflict, DomainError, NotFound
from shared.domain.secrets import NAME_PATTERN
from shared.services.audit import repair_chain, verify_audit, write_digest
from shared.services.peers import AuditPeers
from shared.services.vaults import UnknownVault

EXIT_COULD_NOT_VERIFY = 3


def _load_settings_file(path: Path) -> None:
    document = json.loads(path.read_text())
    for name, value in (document.get("Values") or {}).items():
        if isinstance(value, str):
            os.environ.setdefault(name, value)


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    secret_name = getattr(args, "secret_name", None)
    if secret_name is not None and not NAME_PATTERN.fullmatch(secret_name):
        parser.error("--secret-name must be 1-127 characters of 0-9, a-z, A-Z and -")
    if args.command == "verify" and args.vault is not None and secret_name is None:
        parser.error("--vault goes with --secret-name: the whole trail is verified with every vault")
    try:
        settings_file = getattr(args, "settings", None)
        if settings_file is not None:
            _load_settings_file(settings_file)
        container = Container(Settings())
        if args.command == "digest":
            return _digest(container)
        if args.command == "repair":
            return _repair(container, args)
        report = verify_audit(_audit_peers(container, args), secret_name=secret_name)
    except (ConfigurationError, DomainError, OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_COULD_NOT_VERIFY
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        print(
            f"{report.chains} chain(s), {report.records} record(s), {report.digests} digest(s); "
            f"latest digest {report.to_json()['latest_digest'] or 'never'}"
        )
        for item in report.breaks:
            print(f"BREAK {item.kind.value:14} {item.chain} seq={item.seq}: {item.detail}")
        print("intact" if report.ok else f"{len(report.breaks)} break(s) found")
    return 0 if report.ok else 1


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--settings",
        type=Path,
        default=argparse.SUPPRESS,
        help="local.settings.json whose Values to load first",
    )
    parser = argparse.ArgumentParser(
        prog="python -m shared.entrypoints.cli", description=__doc__.split("\n\n")[0], parents=[common]
    )
    commands = parser.add_subparsers(dest="command", required=True)
    verify = commands.add_parser(
        "verify", parents=[common], help="walk the chains and digests and report every break"
    )
    verify.add_argument("--secret-name", help="only this secret's chain")
    verify.add_argument("--vault", help="the vault of --secret-name (default: KEY_VAULT_URL's)")
    verify.add_argument("--json", action="store_true", help="print the report as JSON")
    commands.add_parser("digest", parents=[common], help="seal a digest of every chain head now")
    repair = commands.add_parser(
        "repair", parents=[common], help="re-derive a chain's head from its records, once they verify"
    )
    which = repair.add_mutually_exclusive_group(required=True)
    which.add_argument("--secret-name", help="the secret whose chain to repair")
    which.add_argument("--service", action="store_true", help="the service chain (refusals, findings)")
    repair.add_argument("--vault", help="the vault of the chain (default: KEY_VAULT_URL's)")
    repair.add_argument("--operator", required=True, help="who repairs (recorded in CHAIN_REPAIRED)")
    repair.add_argument("--reason", required=True, help="why (recorded; an incident id, for example)")
    return parser


def _audit_peers(container: Container, args: argparse.Namespace) -> AuditPeers:
    """The audit peers of the vault ``--vault`` names (the designated vault's without it). Raises
    UnknownVault (a ValueError), ConfigurationError."""
    return container.vault(getattr(args, "vault", None)).audit_peers


def _digest(container: Container) -> int:
    outcome = write_digest(container.audit_peers)
    print(f"digest {outcome.digest.seq} sealed over {len(outcome.digest.heads)} chain(s)")
    for item in outcome.regressions:
        print(f"HELD   {item.chain} seq={item.seq}: {item.detail}")
    for runs in outcome.digest.held_digests:
        print(f"HELD   digest(s) {runs[0]}-{runs[1]}: gone, forged or not what the anchor holds")
    return 1 if outcome.regressions or outcome.digest.held_digests else 0


def _repair(container: Container, args: argparse.Namespace) -> int:
    if not re.fullmatch(r"[^\x00-\x1f]{1,256}", args.operator) or not args.reason.strip():
        print("error: --operator must be 1-256 printable characters and --reason not empty", file=sys.stderr)
        return 2
    try:
        record = repair_chain(
            _audit_peers(container, args),
            secret_name=args.secret_name,
            operator=Actor(id=args.operator, type=ActorType.USER, user_agent="secret-lifecycle-cli"),
            reason=args.reason,
        )
    except (NotFound, Conflict, UnknownVault) as err:
        print(f"refused: {err}", file=sys.stderr)
        return 1
    print(f"repaired {record.chain}: head re-derived, CHAIN_REPAIRED is record {record.seq}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
