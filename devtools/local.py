"""What a newcomer does to the local stack by hand, from the settings ``make run`` wrote (development only).

    python -m devtools.local event SecretNearExpiry NAME     # Key Vault's event for NAME's current version
    python -m devtools.local event SecretNewVersionCreated NAME --version V
    python -m devtools.local secret NAME --expires-in 10     # a secret expiring in 10 days (unmanaged)
    python -m devtools.local secret NAME --expires-in 10 --kind api-key --interval 30   # managed

``event`` sends one of the sample events in ``devtools/events/`` (SecretNearExpiry, SecretExpired,
SecretNewVersionCreated: Key Vault's schema, as Event Grid delivers it) to the app's ``key_vault_events``
webhook, with the vault's name as the service knows it (``127-0-0-1-8443`` for the emulator: the first DNS
label in Azure) and the secret's current version unless ``--version`` names one. ``secret`` creates a
secret with a chosen expiry in the emulator (``exp`` comes from this clock, as the app reads it). The vault
and the app are those of ``--settings`` (``local.settings.json``, where ``make run`` and ``make peers``
write the ports they use). No value is ever printed.

Exit codes: 0 done, 1 refused (the app answered an error, the secret is missing or exists), 2 usage.
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
import urllib.error
import urllib.request
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

REPO_ROOT = Path(__file__).resolve().parent.parent
EVENTS = Path(__file__).resolve().parent / "events"
KINDS = ("SecretNearExpiry", "SecretExpired", "SecretNewVersionCreated")


def load_settings(path: Path) -> dict[str, str]:
    """The Values of a local.settings.json. Raises SystemExit (2) naming the file when it is not one."""
    try:
        values = json.loads(path.read_text())["Values"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise SystemExit(
            f"{path}: not a local.settings.json with Values ({err}); run `make run` first"
        ) from err
    return {k: str(v) for k, v in values.items() if isinstance(v, str)}


def _client(settings: dict[str, str]) -> Any:
    from azure.keyvault.secrets import SecretClient

    from shared.adapters.key_vault import LocalTokenCredential

    url, bundle = settings.get("KEY_VAULT_URL", ""), settings.get("KEY_VAULT_CA_BUNDLE", "")
    if not url or not bundle:
        raise SystemExit(
            "KEY_VAULT_URL and KEY_VAULT_CA_BUNDLE must be in the settings (make run writes them)"
        )
    return SecretClient(
        url, LocalTokenCredential(), verify_challenge_resource=False, connection_verify=bundle
    )


def vault_of(settings: dict[str, str]) -> str:
    """The vault's name as the service knows it (shared.config.vault_name)."""
    from shared.config import vault_name

    parts = urlsplit(settings.get("KEY_VAULT_URL", ""))
    if not parts.hostname:
        raise SystemExit("KEY_VAULT_URL is not in the settings (make run writes it)")
    return vault_name(parts.hostname, parts.port)


def current_version(client: Any, name: str) -> str | None:
    """The id of the newest version of ``name`` (from its versions' properties: no value is read)."""
    from azure.core.exceptions import ResourceNotFoundError

    try:
        versions = list(client.list_properties_of_secret_versions(name))
    except ResourceNotFoundError:
        return None
    newest = max(versions, key=lambda v: v.created_on or datetime.min.replace(tzinfo=UTC), default=None)
    return None if newest is None else str(newest.version)


def event_body(kind: str, name: str, version: str, vault: str) -> bytes:
    """The sample event of ``kind`` for ``name``'s ``version`` in ``vault``."""
    text = (EVENTS / f"{kind}.json").read_text()
    fields = {"id": str(uuid.uuid4()), "name": name, "version": version, "vault": vault,
              "time": datetime.now(UTC).isoformat()}  # fmt: skip
    for key, value in fields.items():
        text = text.replace("{" + key + "}", value)
    json.loads(text)  # a sample that no longer parses is a bug here, not at the app
    return text.encode()


def send_event(args: argparse.Namespace, settings: dict[str, str]) -> int:
    vault = args.vault or vault_of(settings)
    version = args.version
    if version is None:
        version = current_version(_client(settings), args.name)
        if version is None:
            print(
                f"refused: {args.name} is not in the vault (create it: python -m devtools.local secret ...)"
            )
            return 1
    url = f"{args.url.rstrip('/')}/runtime/webhooks/eventgrid?functionName=key_vault_events"
    request = urllib.request.Request(  # noqa: S310 - the scheme was checked (http or https)
        url, data=event_body(args.kind, args.name, version, vault), method="POST",
        headers={"content-type": "application/json", "aeg-event-type": "Notification"},
    )  # fmt: skip
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:  # noqa: S310 - as above
            status = answer.status
    except urllib.error.HTTPError as err:
        print(f"refused: the app answered {err.code}")
        return 1
    except OSError as err:
        print(f"refused: the app at {args.url} does not answer ({err}); is make run running?")
        return 1
    print(f"sent {args.kind} for {args.name} version {version} of vault {vault}: the app answered {status}")
    print("  its log says what it did with it (key_vault_events), the audit trail and the event sink too")
    return 0


def create_secret(args: argparse.Namespace, settings: dict[str, str]) -> int:
    from azure.core.exceptions import ResourceExistsError

    from shared.domain.policy import RotationPolicy, SecretKind

    client = _client(settings)
    if current_version(client, args.name) is not None:
        print(f"refused: {args.name} exists (pick another name)")
        return 1
    tags: dict[str, str] = {"owner": "local"}
    if args.kind is not None:
        tags = RotationPolicy(SecretKind(args.kind), timedelta(days=args.interval), None, "local").to_tags()
    expires = datetime.now(UTC) + timedelta(days=args.expires_in)
    try:
        made = client.set_secret(args.name, secrets.token_urlsafe(32), tags=tags, expires_on=expires)
    except ResourceExistsError:
        print(f"refused: {args.name} is deleted but recoverable")
        return 1
    managed = f"managed ({args.kind}, every {args.interval} days)" if args.kind else "unmanaged"
    version, when = made.properties.version, f"{expires:%Y-%m-%d %H:%M} UTC"
    print(f"created {args.name} version {version}, {managed}, expiring {when}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m devtools.local", description=__doc__.split("\n\n")[0] if __doc__ else None
    )
    parser.add_argument(
        "--settings", type=Path, default=REPO_ROOT / "local.settings.json",
        help="the settings make run wrote (default local.settings.json)",
    )  # fmt: skip
    commands = parser.add_subparsers(dest="command", required=True)
    event = commands.add_parser("event", help="send one of Key Vault's events for a secret to the app")
    event.add_argument("kind", choices=KINDS)
    event.add_argument("name", help="the secret")
    event.add_argument("--version", help="the version (default: the current one)")
    event.add_argument("--vault", help="the vault's name in the event (default: the app's vault)")
    event.add_argument(
        "--url", default="http://127.0.0.1:7071", help="the app (default http://127.0.0.1:7071)"
    )
    secret = commands.add_parser("secret", help="create a secret with a chosen expiry in the emulator")
    secret.add_argument("name", help="the secret (1-127 of 0-9, a-z, A-Z, -)")
    secret.add_argument("--expires-in", type=float, required=True, help="days until it expires")
    secret.add_argument("--kind", help="managed, with this kind (api-key, database-password, ...)")
    secret.add_argument("--interval", type=int, default=30, help="its rotation interval in days (default 30)")
    return parser


def main(argv: list[str] | None = None) -> int:
    from shared.domain.policy import SecretKind
    from shared.domain.secrets import NAME_PATTERN

    parser = build_parser()
    args = parser.parse_args(argv)
    if not NAME_PATTERN.fullmatch(args.name):
        parser.error("the name must be 1-127 characters of 0-9, a-z, A-Z and -")
    if args.command == "event" and urlsplit(args.url).scheme not in ("http", "https"):
        parser.error("--url must be the app's http(s) URL")
    if args.command == "secret" and args.kind is not None and args.kind not in {k.value for k in SecretKind}:
        parser.error(f"--kind must be one of {', '.join(k.value for k in SecretKind)}")
    settings = load_settings(args.settings)
    return send_event(args, settings) if args.command == "event" else create_secret(args, settings)


if __name__ == "__main__":
    sys.exit(main())
