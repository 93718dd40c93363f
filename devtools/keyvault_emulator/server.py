"""The HTTPS server: routes the Key Vault secrets REST API onto the store, with auth, throttling and stats.

Request handling, in the order the service applies it:

1. ``/_emulator/*`` (stats, reset, certificates, clock, throttling): no auth, no latency, not counted.
2. ``--latency-ms``: sleep before anything else, for every Key Vault call (challenges included).
3. Routing: an unknown path is 404 ``NotFound``, a known path with the wrong method 405; both are counted
   as ``unknown``.
4. Auth: without ``Authorization: Bearer <anything>`` the answer is the 401 challenge (counted as
   ``challenge``); any bearer token is accepted.
5. The call is counted under its operation name (even when it is then throttled or invalid).
6. ``api-version`` must be present and look like a Key Vault version (``7.6``, ``2025-07-01``): else 400.
7. Throttling (unless switched off: ``--throttling-off`` / ``POST /_emulator/throttling``): ``set_secret``
   against the create window, everything else against the transaction window; an excess call is 429
   ``Throttled`` with ``Retry-After`` (whole seconds until a slot frees) and is counted in ``throttled``.
8. ``--deny``: a denied operation is 403 ``Forbidden`` with inner error ``ForbiddenByRbac``.
9. The operation itself (the store applies ``--purge-protection`` and ``--delete-delay-ms``).

With ``--empty-pages`` every list answers an empty page (``value: []``) with a ``nextLink`` before each
real page, as the service sometimes does; the skip token records which of the two comes next, so paging
stays deterministic.

Each call is logged to stderr as method, path, status, operation and duration: never a body.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
import socket
import socketserver
import ssl
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar
from urllib.parse import parse_qs, quote, unquote, urlsplit

from devtools.keyvault_emulator.certs import PEM, PKCS12, certificate_secret
from devtools.keyvault_emulator.errors import ServiceError, bad_parameter
from devtools.keyvault_emulator.limits import SlidingWindow, Stats
from devtools.keyvault_emulator.rbac import EMULATOR_TENANT_ID, forbidden_by_rbac
from devtools.keyvault_emulator.store import (
    JSON,
    MAX_CLOCK_OFFSET_SECONDS,
    MAX_PAGE_SIZE,
    SecretStore,
    validate_name,
)

log = logging.getLogger("keyvault_emulator")

CHALLENGE = (
    f'Bearer authorization="https://login.microsoftonline.com/{EMULATOR_TENANT_ID}", '
    'resource="https://vault.azure.net"'
)
MAX_BODY_BYTES = 1024 * 1024
MAX_DRAIN_BYTES = 16 * 1024 * 1024
_API_VERSION = re.compile(r"\d+\.\d+(-preview(\.\d+)?)?|\d{4}-\d{2}-\d{2}(-preview)?")
_BEARER = re.compile(r"Bearer\s+\S+", re.IGNORECASE)
_LIST_OPERATIONS = {"list_secrets", "list_versions", "list_deleted_secrets"}


def route(segments: list[str]) -> tuple[dict[str, str], dict[str, str]] | None:
    """({HTTP method: operation}, path parameters) for a Key Vault path, or None when there is no such path.

    ``segments`` are the unquoted path segments; a trailing slash gives a last empty segment, which the
    SDK sends for "the latest version" (``GET /secrets/{name}/``).
    """
    match segments:
        case ["secrets"] | ["secrets", ""]:
            return {"GET": "list_secrets"}, {}
        case ["secrets", name]:
            methods = {"GET": "get_secret", "PUT": "set_secret", "DELETE": "delete_secret"}
            if name == "restore":
                methods["POST"] = "restore_secret"
            return methods, {"name": name}
        case ["secrets", name, ""]:
            return {"GET": "get_secret", "PATCH": "update_secret"}, {"name": name}
        case ["secrets", name, version]:
            # Version ids are 32 hex digits, so "versions" and "backup" cannot be versions.
            methods = {"GET": "get_secret", "PATCH": "update_secret"}
            if version == "versions":
                methods["GET"] = "list_versions"
            elif version == "backup":
                methods["POST"] = "backup_secret"
            return methods, {"name": name, "version": version}
        case ["deletedsecrets"] | ["deletedsecrets", ""]:
            return {"GET": "list_deleted_secrets"}, {}
        case ["deletedsecrets", name]:
            return {"GET": "get_deleted_secret", "DELETE": "purge_deleted_secret"}, {"name": name}
        case ["deletedsecrets", name, "recover"]:
            return {"POST": "recover_deleted_secret"}, {"name": name}
    return None


def encode_skip_token(kind: str, marker: str | None, *, after_empty: bool = False) -> str:
    """An opaque ``$skiptoken``: the list, the last key served (None: from the start) and whether the
    empty page that precedes the next real page (``--empty-pages``) has been served."""
    fields: dict[str, object] = {"k": kind, "m": marker}
    if after_empty:
        fields["e"] = 1
    raw = json.dumps(fields, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_skip_token(kind: str, token: str) -> tuple[str | None, bool]:
    """(marker, after_empty) from ``encode_skip_token``; 400 ``BadParameter`` for anything else."""
    try:
        padded = token + "=" * (-len(token) % 4)
        data = json.loads(base64.urlsafe_b64decode(padded.encode()))
        marker = data["m"]
        if data["k"] == kind and (marker is None or isinstance(marker, str)):
            return marker, data.get("e") == 1
    except (ValueError, KeyError, TypeError, AttributeError, binascii.Error):
        pass
    raise bad_parameter("The skip token is invalid.")


class EmulatorServer(ThreadingHTTPServer):
    """A threading HTTPS server; the TLS handshake runs in the request's thread, not the accept loop."""

    daemon_threads = True
    request_queue_size = 128

    def __init__(
        self,
        host: str,
        port: int,
        *,
        store: SecretStore,
        ssl_context: ssl.SSLContext,
        latency_ms: int = 0,
        create_limit: int,
        tx_limit: int,
        window_seconds: float,
        deny: frozenset[str] = frozenset(),
        empty_pages: bool = False,
        throttling: bool = True,
    ) -> None:
        if ":" in host:
            self.address_family = socket.AF_INET6
        self.host = host
        super().__init__((host, port), KeyVaultHandler)
        self.ssl_context = ssl_context
        self.store = store
        self.stats = Stats()
        self.latency = latency_ms / 1000.0
        self.create_window = SlidingWindow(create_limit, window_seconds)
        self.tx_window = SlidingWindow(tx_limit, window_seconds)
        self.throttling = throttling
        self.deny = deny
        self.empty_pages = empty_pages
        self.store.base_url = self.base_url

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    @property
    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"https://{host}:{self.port}"

    def server_bind(self) -> None:
        # HTTPServer.server_bind calls socket.getfqdn(), a reverse DNS lookup that can stall for seconds.
        socketserver.TCPServer.server_bind(self)
        self.server_name = self.host
        self.server_port = self.port

    def finish_request(self, request: Any, client_address: Any) -> None:
        request.settimeout(10)
        # Headers and body go out in two writes; without NODELAY, Nagle + delayed ACK add ~40 ms per call.
        request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            tls = self.ssl_context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError) as err:
            # Typically a client that does not trust the certificate: it hangs up during the handshake.
            log.info("TLS handshake with %s failed: %s", client_address[0], err)
            request.close()
            return
        try:
            KeyVaultHandler(tls, client_address, self)
        finally:
            tls.close()


class KeyVaultHandler(BaseHTTPRequestHandler):
    server: EmulatorServer
    protocol_version = "HTTP/1.1"
    timeout = 60  # idle keep-alive connections are closed after this many seconds

    _status = 0
    _operation = "-"

    def do_GET(self) -> None:
        self._handle()

    def do_PUT(self) -> None:
        self._handle()

    def do_PATCH(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def do_DELETE(self) -> None:
        self._handle()

    def do_HEAD(self) -> None:
        self._handle()

    def do_OPTIONS(self) -> None:
        self._handle()

    # ------------------------------------------------------------------------------------------- dispatch

    def _handle(self) -> None:
        started = time.perf_counter()
        self._status, self._operation = 0, "-"
        url = urlsplit(self.path)
        try:
            body = self._read_body()
            if url.path.startswith("/_emulator/"):
                self._operation = "emulator"
                self._emulator(url.path, body)
                return
            if self.server.latency:
                time.sleep(self.server.latency)
            self._key_vault(url.path, parse_qs(url.query, keep_blank_values=True), body)
        except ServiceError as err:
            self._send_json(err.status, err.body(), err.headers)
        except Exception:
            log.exception("%s %s failed", self.command, url.path)
            self._fail()
        finally:
            elapsed = (time.perf_counter() - started) * 1000
            log.info("%s %s -> %d %s %.1f ms", self.command, url.path, self._status, self._operation, elapsed)

    def _key_vault(self, path: str, query: dict[str, list[str]], body: bytes) -> None:
        stats = self.server.stats
        segments = [unquote(part) for part in path.split("/")[1:]]
        routed = route(segments)
        if routed is None:
            stats.count("unknown")
            raise ServiceError(404, "NotFound", f"The requested path {path[:200]} does not exist.")
        methods, params = routed
        operation = methods.get(self.command)
        if operation is None:
            stats.count("unknown")
            allow = ", ".join(sorted(methods))
            raise ServiceError(
                405,
                "MethodNotAllowed",
                f"The method {self.command} is not allowed on {path[:200]}; allowed: {allow}.",
                headers={"Allow": allow},
            )
        if not _BEARER.fullmatch(self.headers.get("Authorization", "").strip()):
            stats.count("challenge")
            self._operation = "challenge"
            raise ServiceError(
                401,
                "Unauthorized",
                "AKV10000: Request is missing a Bearer or PoP token.",
                headers={"WWW-Authenticate": CHALLENGE},
            )
        self._operation = operation
        stats.count(operation, params.get("name"))
        api_version = _single(query, "api-version")
        if api_version is None or not _API_VERSION.fullmatch(api_version):
            raise bad_parameter(
                f"The specified version ({api_version or ''}) is not recognized. "
                "Consider using the latest supported version (2026-04-01)."
            )
        window = self.server.create_window if operation == "set_secret" else self.server.tx_window
        retry_after = window.acquire() if self.server.throttling else None
        if retry_after is not None:
            stats.count_throttled()
            raise ServiceError(
                429,
                "Throttled",
                "Request was not processed because too many requests were received. "
                f"Reason: the emulated vault's limit of {window.limit} requests per {window.window:g} "
                f"seconds was exceeded. Retry after {retry_after} seconds.",
                headers={"Retry-After": str(retry_after)},
            )
        if operation in self.server.deny:
            raise forbidden_by_rbac(operation, params.get("name"))
        self._perform(operation, params, query, api_version, body)

    def _perform(
        self,
        operation: str,
        params: dict[str, str],
        query: dict[str, list[str]],
        api_version: str,
        body: bytes,
    ) -> None:
        store = self.server.store
        name = params.get("name", "")
        version = params.get("version") or None
        if operation in _LIST_OPERATIONS:
            self._list(operation, name, query, api_version)
        elif operation == "set_secret":
            self._send_json(200, store.set_secret(name, _json_body(body)))
        elif operation == "get_secret":
            self._send_json(200, store.get_secret(name, version))
        elif operation == "update_secret":
            self._send_json(200, store.update_secret(name, version, _json_body(body)))
        elif operation == "delete_secret":
            self._send_json(200, store.delete_secret(name))
        elif operation == "get_deleted_secret":
            self._send_json(200, store.get_deleted_secret(name))
        elif operation == "recover_deleted_secret":
            self._send_json(200, store.recover_deleted_secret(name))
        elif operation == "purge_deleted_secret":
            store.purge_deleted_secret(name)
            self._send_empty(204)
        else:  # backup_secret, restore_secret
            raise ServiceError(501, "NotImplemented", f"The emulator does not implement {operation}.")

    def _list(self, operation: str, name: str, query: dict[str, list[str]], api_version: str) -> None:
        raw_max = _single(query, "maxresults")
        try:
            maxresults = MAX_PAGE_SIZE if raw_max is None else int(raw_max)
        except ValueError:
            maxresults = 0
        if not 1 <= maxresults <= MAX_PAGE_SIZE:
            raise bad_parameter(
                f"Invalid value for maxresults: {(raw_max or '')[:20]}. "
                f"It must be between 1 and {MAX_PAGE_SIZE}."
            )
        token = _single(query, "$skiptoken")
        marker, after_empty = decode_skip_token(operation, token) if token else (None, False)
        store = self.server.store
        if operation == "list_secrets":
            items, next_marker = store.list_secrets(maxresults, marker)
            path = "/secrets"
        elif operation == "list_versions":
            items, next_marker = store.list_versions(name, maxresults, marker)
            path = f"/secrets/{quote(name)}/versions"
        else:
            items, next_marker = store.list_deleted_secrets(maxresults, marker)
            path = "/deletedsecrets"

        def link(to: str | None, *, after_empty: bool = False) -> str:
            out = (
                f"{self.server.base_url}{path}?api-version={quote(api_version)}"
                f"&$skiptoken={encode_skip_token(operation, to, after_empty=after_empty)}"
            )
            return out + (f"&maxresults={maxresults}" if raw_max is not None else "")

        if self.server.empty_pages and not after_empty:
            # The page just read (so that validation still happens) is served by the next request instead.
            self._send_json(200, {"value": [], "nextLink": link(marker, after_empty=True)})
            return
        next_link = None if next_marker is None else link(next_marker)
        self._send_json(200, {"value": items, "nextLink": next_link})

    def _emulator(self, path: str, body: bytes) -> None:
        certificate = re.fullmatch(r"/_emulator/certificates/([^/]+)", path)
        if certificate and self.command == "POST":
            self._create_certificate(unquote(certificate.group(1)), body)
        elif path == "/_emulator/stats" and self.command == "GET":
            snapshot = self.server.stats.snapshot()
            active, deleted = self.server.store.counts()
            snapshot["secrets"] = {"active": active, "deleted": deleted}
            self._send_json(200, snapshot)
        elif path == "/_emulator/reset" and self.command == "POST":
            self.server.stats.reset()
            self._send_empty(204)
        elif path == "/_emulator/clock" and self.command in ("GET", "POST"):
            if self.command == "POST":
                self.server.store.set_clock_offset(_settings_body(body, "offset_seconds", _offset))
            self._send_json(200, self._clock())
        elif path == "/_emulator/throttling" and self.command in ("GET", "POST"):
            if self.command == "POST":
                enabled = _settings_body(body, "enabled", _boolean)
                if enabled and not self.server.throttling:
                    # Limits switched on start from an idle vault: what was admitted while off is not owed.
                    self.server.create_window.clear()
                    self.server.tx_window.clear()
                self.server.throttling = enabled
            self._send_json(200, self._throttling())
        elif certificate or path in _EMULATOR_PATHS:
            raise ServiceError(405, "MethodNotAllowed", f"The method {self.command} is not allowed here.")
        else:
            raise ServiceError(404, "NotFound", f"The requested path {path[:200]} does not exist.")

    def _create_certificate(self, name: str, body: bytes) -> None:
        """What a certificate create (or renewal) leaves in the secrets API: a managed secret version."""
        validate_name(name)
        options = _json_body(body) if body else {}
        content_type = options.get("contentType", PKCS12) if isinstance(options, dict) else None
        if content_type not in (PKCS12, PEM):
            raise bad_parameter(f"Property 'contentType' must be {PKCS12} or {PEM}.")
        now = datetime.fromtimestamp(self.server.store.now(), UTC)
        value, nbf, exp = certificate_secret(name, content_type, now)
        self._send_json(200, self.server.store.create_certificate(name, value, content_type, nbf, exp))

    def _clock(self) -> JSON:
        store = self.server.store
        now = store.now()
        return {
            "offset_seconds": store.clock_offset,
            "now": now,
            "now_utc": datetime.fromtimestamp(now, UTC).isoformat().replace("+00:00", "Z"),
        }

    def _throttling(self) -> JSON:
        server = self.server
        return {
            "enabled": server.throttling,
            "create_limit": server.create_window.limit,
            "tx_limit": server.tx_window.limit,
            "window_seconds": server.tx_window.window,
        }

    # ------------------------------------------------------------------------------------------------ I/O

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self.close_connection = True
            raise ServiceError(411, "LengthRequired", "Chunked request bodies are not supported.")
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0:
            self.close_connection = True
            raise bad_parameter("Invalid Content-Length header.")
        if length > MAX_BODY_BYTES:
            # Drain a moderately large body so the client reads the 413 instead of a connection reset.
            if length <= MAX_DRAIN_BYTES:
                remaining = length
                while remaining > 0:
                    chunk = self.rfile.read(min(remaining, 65536))
                    if not chunk:
                        break
                    remaining -= len(chunk)
            self.close_connection = True
            raise ServiceError(413, "RequestEntityTooLarge", "The request body is too large.")
        return self.rfile.read(length) if length else b""

    def _fail(self) -> None:
        """Answer 500 unless a response has started (then only drop the connection)."""
        if self._status == 0:
            try:
                self._send_json(500, {"error": {"code": "InternalServerError", "message": "Emulator error."}})
                return
            except OSError:
                pass
        self.close_connection = True

    def _common_headers(self) -> None:
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Pragma", "no-cache")
        self.send_header("Expires", "-1")
        self.send_header("x-ms-request-id", str(uuid.uuid4()))
        client_request_id = self.headers.get("x-ms-client-request-id")
        if client_request_id:
            self.send_header("x-ms-client-request-id", client_request_id[:200])
        self.send_header("x-ms-keyvault-service-version", "emulator")
        self.send_header("x-ms-keyvault-region", "local")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Strict-Transport-Security", "max-age=31536000;includeSubDomains")
        if self.close_connection:
            self.send_header("Connection", "close")

    def _send_json(self, status: int, payload: JSON, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload, separators=(",", ":")).encode("utf-8")
        self._status = status
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        for header, value in (headers or {}).items():
            self.send_header(header, value)
        self._common_headers()
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _send_empty(self, status: int) -> None:
        self._status = status
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self._common_headers()
        self.end_headers()

    def version_string(self) -> str:
        return "keyvault-emulator"

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """Silenced: ``_handle`` logs one line per call, without the query string."""

    def log_message(self, format: str, *args: Any) -> None:
        log.warning("%s: %s", self.address_string(), format % args)


def _single(query: dict[str, list[str]], key: str) -> str | None:
    values = query.get(key)
    return values[-1] if values else None


T = TypeVar("T")
_EMULATOR_PATHS = {"/_emulator/stats", "/_emulator/reset", "/_emulator/clock", "/_emulator/throttling"}


def _offset(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or abs(value) > MAX_CLOCK_OFFSET_SECONDS:
        raise bad_parameter(
            f"Property 'offset_seconds' must be a whole number of seconds between "
            f"-{MAX_CLOCK_OFFSET_SECONDS} and {MAX_CLOCK_OFFSET_SECONDS} (ten years)."
        )
    return value


def _boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise bad_parameter("Property 'enabled' must be true or false.")
    return value


def _settings_body(body: bytes, key: str, check: Callable[[Any], T]) -> T:
    """The one property of a settings body ``{key: value}``, checked; 400 for any other body."""
    document = _json_body(body)
    if not isinstance(document, dict) or set(document) != {key}:
        raise bad_parameter(f"The request body must be a JSON object with exactly one property, '{key}'.")
    return check(document[key])


def _json_body(body: bytes) -> Any:
    if not body:
        raise bad_parameter("The request body is missing.")
    try:
        return json.loads(body)
    except ValueError as err:  # JSONDecodeError and UnicodeDecodeError
        raise bad_parameter("The request body is not valid JSON.") from err
