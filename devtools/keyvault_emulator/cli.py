"""Command line: ``python -m devtools.keyvault_emulator --host HOST --port PORT --cert-file PATH ...``."""

from __future__ import annotations

import argparse
import ipaddress
import logging
import signal
import socket
import sys
import threading
from pathlib import Path
from types import FrameType

from devtools.keyvault_emulator.certs import generate_certificate, server_context, write_certificate
from devtools.keyvault_emulator.limits import DEFAULT_CREATE_LIMIT, DEFAULT_TX_LIMIT, DEFAULT_WINDOW_SECONDS
from devtools.keyvault_emulator.rbac import parse_operations
from devtools.keyvault_emulator.server import EmulatorServer
from devtools.keyvault_emulator.store import SecretStore

log = logging.getLogger("keyvault_emulator")

DESCRIPTION = """\
A local Azure Key Vault *secrets* emulator for development and tests: HTTPS with a fresh self-signed
certificate, the 401 bearer challenge (any token is then accepted), the secrets REST API (set, get, list,
versions, update, soft delete, deleted get/list, recover, purge), the service's validation, errors and
throttling. It is a development tool with no real authentication: it only binds loopback addresses.

Once it accepts connections it prints one line on stdout: "keyvault-emulator ready https://HOST:PORT".
Point azure-keyvault-secrets' SecretClient at that URL with verify_challenge_resource=False and
connection_verify=<the --cert-file PEM>. Logs (method, path, status; never a value) go to stderr.

Extra endpoints (no auth, no latency, not counted):
  GET /_emulator/stats returns {"requests": {operation: count}, "throttled": n, "total": n, "names":
    {operation: {secret name (lower case): count}}, "secrets": {"active": n, "deleted": n}}; requests
    counts every call routed to an operation (set_secret, get_secret, list_secrets, list_versions,
    update_secret, delete_secret, get_deleted_secret, list_deleted_secrets, recover_deleted_secret,
    purge_deleted_secret) including throttled and failed ones, 401 challenges as "challenge" and
    unroutable calls as "unknown"; total is their sum; names splits the operations on one secret by its
    name (e.g. whose values get_secret read).
  POST /_emulator/reset zeroes the counters (not the secrets).
  POST /_emulator/certificates/NAME (optional body {"contentType": "application/x-pkcs12" (default) or
    "application/x-pem-file"}) creates, or renews, a self-signed certificate NAME: its secret is listed
    and read like Key Vault's (managed: true, a kid, the PFX or PEM as value) and set, update or delete
    of it through the secrets API is 409 Conflict.
  POST /_emulator/clock with the body {"offset_seconds": N} shifts the emulator's clock by N seconds
    (negative: into the past; |N| at most 315619200, ten years; 0 resets it; any other body is 400):
    every timestamp it stamps from then on (created, updated, deletedDate, scheduledPurgeDate, a
    certificate's validity) and the purge of deleted secrets at their scheduledPurgeDate use the shifted
    time, so a secret set at -40 days is 40 days old, e.g. already due for rotation. Delete and recover
    delays stay real time; the offset is not kept in the state file. GET /_emulator/clock, like the POST,
    answers {"offset_seconds": N, "now": unix seconds, "now_utc": ISO 8601}, the shifted now.
  POST /_emulator/throttling with the body {"enabled": true|false} switches the limits (--create-limit,
    --tx-limit) on or off; switched on, they start from an idle vault. GET /_emulator/throttling answers
    {"enabled", "create_limit", "tx_limit", "window_seconds"}. With --throttling-off the emulator starts
    with them off: seed thousands of secrets, then switch Key Vault's limits on for what you measure.

A soft-deleted name cannot be set again (409 Conflict, innererror.code "ObjectIsDeletedButRecoverable");
reading, updating or deleting it is 404 SecretNotFound, as in the service.

By default it is a vault with soft delete, no purge protection and full access. Options make it as strict
as a real vault can be, so that code which passes here does not fail in Azure:
  --purge-protection   recoveryLevel "Recoverable"; purging a deleted secret is 403 Forbidden ('Operation
                       "purge" is not allowed because purge protection is enabled ...'); deleted secrets
                       are still purged automatically at their scheduledPurgeDate (90 days).
  --delete-delay-ms N  delete and recover complete N ms after they are answered, as the service's do.
                       Until then GET /deletedsecrets/{name} (after a delete) or GET /secrets/{name} (after
                       a recover) is 404, and writes are 409 Conflict with the service's innererror.code:
                       "ObjectIsBeingDeleted" for set, recover or purge during a delete (update or delete
                       are 404: the secret has left the collection), "ObjectIsBeingRecovered" for set,
                       update, delete, recover or purge during a recover. The SDK's
                       begin_delete_secret(...).wait() and begin_recover_deleted_secret(...).wait() poll
                       through this (every 2 s unless given _polling_interval=...). Purge completes at once.
  --empty-pages        every list (secrets, versions, deleted secrets) answers an empty page ("value": [])
                       carrying a nextLink before each real page, as the service sometimes does.
  --deny OPS           the operations named in OPS (comma-separated stats names, e.g.
                       set_secret,purge_deleted_secret; repeatable) answer 403 Forbidden with
                       error.innererror.code "ForbiddenByRbac" and the data action the caller lacks, as a
                       vault using Azure RBAC does for a missing role assignment. (A disabled version's 403
                       has innererror.code "SecretDisabled" instead.)
Regardless of options, the service's unspecified orders are not hidden: list versions returns versions
ordered by their random version id, not by creation, so sort by created_on (1 s resolution) yourself; list
secrets returns secrets in an order fixed for the process's life but unrelated to their names (a keyed
hash with a random key), so paging stays consistent. Deleted secrets are listed by name.
"""


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return value


def _operations(text: str) -> list[str]:
    try:
        return sorted(parse_operations(text))
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from err


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError("must be more than 0")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m devtools.keyvault_emulator",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="loopback address or name to bind (default 127.0.0.1); "
        "non-loopback hosts are refused"
    )  # fmt: skip
    parser.add_argument(
        "--port", type=_non_negative_int, default=8443, help="port (default 8443; 0 picks a free one)"
    )
    parser.add_argument(
        "--cert-file", type=Path, required=True,
        help="where to write the PEM of the self-signed certificate (a CA certificate: trust it as a CA "
        "bundle)",
    )  # fmt: skip
    parser.add_argument(
        "--state-file", type=Path, default=None,
        help="JSON file keeping secrets, including deleted ones, across restarts; rewritten atomically "
        "after every change (it holds values in clear text: development data only)",
    )  # fmt: skip
    parser.add_argument(
        "--latency-ms", type=_non_negative_int, default=0,
        help="added to every Key Vault call before it is answered (default 0)",
    )  # fmt: skip
    parser.add_argument(
        "--create-limit", type=_positive_int, default=DEFAULT_CREATE_LIMIT,
        help=f"set_secret calls admitted per window (default {DEFAULT_CREATE_LIMIT}, the service's limit)",
    )  # fmt: skip
    parser.add_argument(
        "--tx-limit", type=_positive_int, default=DEFAULT_TX_LIMIT,
        help=f"other calls admitted per window (default {DEFAULT_TX_LIMIT}, the service's limit)",
    )  # fmt: skip
    parser.add_argument(
        "--window-seconds", type=_positive_float, default=DEFAULT_WINDOW_SECONDS,
        help=f"length of the sliding throttling window (default {DEFAULT_WINDOW_SECONDS:g}, the service's); "
        "tests shorten it so that a 429's Retry-After stays short",
    )  # fmt: skip
    parser.add_argument(
        "--throttling-off", action="store_true",
        help="start with the limits above not enforced; POST /_emulator/throttling {\"enabled\": true} "
        "switches them on (e.g. after seeding many secrets)",
    )  # fmt: skip
    parser.add_argument(
        "--purge-protection", action="store_true",
        help="the vault has purge protection: purge is 403 Forbidden, recoveryLevel is Recoverable",
    )  # fmt: skip
    parser.add_argument(
        "--delete-delay-ms", type=_non_negative_int, default=0, metavar="N",
        help="delete and recover complete N ms after they are answered; meanwhile reads of the secret are "
        "404 and writes to its name 409 (default 0: at once)",
    )  # fmt: skip
    parser.add_argument(
        "--empty-pages", action="store_true",
        help="lists interleave empty pages that still carry a nextLink",
    )  # fmt: skip
    parser.add_argument(
        "--deny", type=_operations, action="extend", default=[], metavar="OPS",
        help="comma-separated operations (as named in /_emulator/stats) that answer 403 ForbiddenByRbac",
    )  # fmt: skip
    return parser


def is_loopback(host: str) -> bool:
    """True when every address ``host`` resolves to is a loopback address."""
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(info[4][0]).is_loopback for info in infos)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    log_format = "%(asctime)s keyvault-emulator %(levelname)s %(message)s"
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format=log_format)
    host: str = args.host.strip("[]")
    if not is_loopback(host):
        parser.error(f"refusing to bind {host!r}: the emulator has no authentication; use a loopback host")
    try:
        store = SecretStore.open(
            args.state_file, purge_protection=args.purge_protection, delete_delay_ms=args.delete_delay_ms
        )
    except ValueError as err:
        parser.error(str(err))
    cert_pem, key_pem = generate_certificate((host,))
    try:
        server = EmulatorServer(
            host,
            args.port,
            store=store,
            ssl_context=server_context(cert_pem, key_pem),
            latency_ms=args.latency_ms,
            create_limit=args.create_limit,
            tx_limit=args.tx_limit,
            window_seconds=args.window_seconds,
            deny=frozenset(args.deny),
            empty_pages=args.empty_pages,
            throttling=not args.throttling_off,
        )
    except OSError as err:
        log.error("cannot listen on %s port %s: %s", host, args.port, err)
        return 1
    try:
        write_certificate(args.cert_file, cert_pem)
    except OSError as err:
        log.error("cannot write the certificate to %s: %s", args.cert_file, err)
        server.server_close()
        return 1

    stopping = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if not stopping.is_set():
            stopping.set()
            log.info("received %s, shutting down", signal.Signals(signum).name)
            # shutdown() waits for serve_forever() to return, so it cannot run on the serving thread.
            threading.Thread(target=server.shutdown, name="shutdown", daemon=True).start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    active, deleted = store.counts()
    log.info(
        "listening on %s (%d secrets, %d deleted; state file: %s)",
        server.base_url, active, deleted, args.state_file or "none",
    )  # fmt: skip
    log.info(
        "purge protection: %s; delete delay: %d ms; empty pages: %s; denied: %s",
        "on" if args.purge_protection else "off", args.delete_delay_ms, "on" if args.empty_pages else "off",
        ",".join(sorted(set(args.deny))) or "none",
    )  # fmt: skip
    log.info(
        "latency: %d ms; throttling: %s (%d set_secret and %d other calls per %g s)",
        args.latency_ms, "off" if args.throttling_off else "on", args.create_limit, args.tx_limit,
        args.window_seconds,
    )  # fmt: skip
    # The socket is bound and listening: connections queue in the backlog until serve_forever accepts them.
    print(f"keyvault-emulator ready {server.base_url}", flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        store.save()
        server.server_close()
        log.info("stopped")
    return 0
