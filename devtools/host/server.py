"""The HTTP side of the dev host: HTTP triggers, Core Tools' admin API and the Event Grid webhook.

* ``/<routePrefix>/<route>`` runs HTTP trigger functions. As in the Functions host, a request that no function
  matches by route *and* method is 404 (a wrong method too: no 405), and a function that raises is 500 with
  an empty body (the traceback goes to the log, never to the caller).
* ``POST /admin/functions/<name>`` with ``{"input": "..."}`` runs a non-HTTP function now → 202.
* ``POST /runtime/webhooks/eventgrid?functionName=<name>`` is the Event Grid trigger's webhook.

Requests are held to the limits of Kestrel, the server inside the Functions host (and so Core Tools), which
sets only the body limit itself: a request line over 8 KB is 414, request headers over 32 KB in all or more
than 100 of them are 431, a body over 100 MB is 413, and a request that cannot be parsed is 400. Each of these
is an HTTP answer with ``Connection: close``, never a dropped connection: the rest of the request is read and
discarded (up to a bound) before the socket closes, so the client is not reset before it reads the status.

As App Service's front end does in Azure, an HTTP function sees the caller's address appended to
``X-Forwarded-For`` as the last hop (``ip:port``, ``[ipv6]:port``), after any hops the client sent itself.
"""

from __future__ import annotations

import http
import io
import json
import logging
import socket
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import azure.functions as func

from devtools.host.functions import EVENT_GRID, HTTP, QUEUE, TIMER, FunctionInfo, Invoker
from devtools.host.routes import RouteTable
from devtools.host.triggers import event_grid_events, queue_message, timer_request

__all__ = ["DevHostServer", "Dispatch"]

logger = logging.getLogger("devtools.host")

MAX_BODY_BYTES = 100 * 1024 * 1024  # the Functions host's default request size limit
# Kestrel's defaults (KestrelServerLimits), which the Functions host keeps.
MAX_REQUEST_LINE_BYTES = 8 * 1024  # MaxRequestLineSize -> 414
MAX_HEADERS_TOTAL_BYTES = 32 * 1024  # MaxRequestHeadersTotalSize -> 431
MAX_HEADER_COUNT = 100  # MaxRequestHeaderCount -> 431
# After refusing a request, read at most this much of the rest of it (for at most LINGER_SECONDS) before
# closing, so the client gets to read the refusal instead of a connection reset.
LINGER_BYTES = 4 * 1024 * 1024
LINGER_SECONDS = 2.0


@dataclass(frozen=True)
class Dispatch:
    """What the server routes to: every runnable function by (case-insensitive) name, and the HTTP routes."""

    functions: Mapping[str, FunctionInfo]
    routes: RouteTable
    route_prefix: str
    invoker: Invoker

    def function(self, name: str) -> FunctionInfo | None:
        return self.functions.get(name.lower())


class DevHostServer(ThreadingHTTPServer):
    """A threading HTTP server (one thread per connection) bound to a loopback address."""

    daemon_threads = True
    block_on_close = False
    # Kestrel's listen backlog; the standard library's 5 drops handshakes when a burst of clients connects.
    request_queue_size = 512

    def __init__(self, host: str, port: int, dispatch: Dispatch) -> None:
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.dispatch = dispatch
        super().__init__((host, port), _Handler)

    @property
    def base_url(self) -> str:
        host, port = self.socket.getsockname()[:2]
        shown = f"[{host}]" if ":" in host else host
        return f"http://{shown}:{port}"


class _BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class _HeadersTooLarge(Exception):
    pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "devtools.host"
    # Idle keep-alive connections are dropped after this many seconds.
    timeout = 30
    # Headers and body go out in two writes: without TCP_NODELAY the body waits for the client's delayed
    # ACK of the headers (~40 ms per keep-alive call), which Kestrel does not do.
    disable_nagle_algorithm = True
    server: DevHostServer
    _started = 0.0
    # Set when a request is refused before all of it was read: finish() drains the rest before closing.
    _linger = False

    def do_GET(self) -> None:
        self._handle()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = do_GET

    # -- reading a request under Kestrel's limits ------------------------------------------------------

    def handle_one_request(self) -> None:
        """The standard library's loop step, with Kestrel's request line and header limits."""
        self._started = time.perf_counter()
        self.command, self.path, self.request_version, self.requestline = "", "", "", ""
        try:
            self.raw_requestline = self.rfile.readline(MAX_REQUEST_LINE_BYTES + 1)
            if not self.raw_requestline:
                self.close_connection = True
                return
            if len(self.raw_requestline) > MAX_REQUEST_LINE_BYTES:
                command, _, rest = str(self.raw_requestline, "iso-8859-1").partition(" ")
                self.command, self.path = command[:32], rest.split(" ", 1)[0]  # for the log line
                self.send_error(414, explain=f"request line over {MAX_REQUEST_LINE_BYTES} bytes")
                return
            words = str(self.raw_requestline, "iso-8859-1").split()
            if len(words) == 2:  # "GET /path", HTTP/0.9: Kestrel refuses it, without waiting for headers
                self.command, self.path = words[0][:32], words[1]
                self.send_error(400, explain="request line without an HTTP version")
                return
            try:
                if not self.parse_request():
                    return  # parse_request has answered (send_error), or the line was blank
            except _HeadersTooLarge as err:
                self.send_error(431, explain=str(err))
                return
            # Kestrel takes any method token, and the Functions host routes it like any other: no function
            # for it and the route is 404, as for TRACE (azure-functions-host#10098), never 501.
            getattr(self, f"do_{self.command}", self._handle)()
            self.wfile.flush()
        except TimeoutError as err:
            self.log_error("Request timed out: %r", err)
            self.close_connection = True

    def parse_request(self) -> bool:
        # The standard library parses the request line, then the headers, which it reads through
        # _HeaderReader: under Kestrel's limits, and handed over as one "line", because the library's own cap
        # of 100 lines counts the blank one (so 99 headers) and would otherwise overrule Kestrel's 100.
        socket_file = self.rfile
        self.rfile = _HeaderReader(socket_file)  # type: ignore[assignment]
        try:
            return super().parse_request()
        finally:
            self.rfile = socket_file

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Refuse a request as Kestrel does: the status, an empty body, and the connection closed."""
        logger.warning(
            "Refused a request with %d %s: %s",
            code,
            _phrase(code),
            explain or message or "-",
        )
        self.close_connection = True
        self._linger = True
        # The standard library writes no status line to what it takes for an HTTP/0.9 client (a request line
        # it could not read counts as one); Kestrel answers every client with a status.
        self.request_version = self.protocol_version
        self._send(code, b"", [("Connection", "close")])

    def finish(self) -> None:
        super().finish()
        if self._linger:
            _drain(self.connection)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        elapsed = (time.perf_counter() - self._started) * 1000
        path = self.path if len(self.path) <= 200 else f"{self.path[:200]}..."
        logger.info("%s %s -> %s (%.0f ms)", self.command or "-", path or "-", code, elapsed)

    def log_message(self, format: str, *args: Any) -> None:
        logger.warning("%s", format % args)

    # -- routing -------------------------------------------------------------------------------------------

    def _handle(self) -> None:
        try:
            body = self._read_body()
            target = urlsplit(self.path)
            path = target.path
            lowered = path.lower()
            if lowered.startswith("/admin/functions/"):
                self._admin(unquote(path[len("/admin/functions/") :]).strip("/"), body)
            elif lowered.rstrip("/") == "/admin/host/status":
                self._send_json(200, {"state": "Running"})
            elif lowered.rstrip("/") == "/runtime/webhooks/eventgrid":
                self._event_grid(dict(parse_qsl(target.query)), body)
            else:
                self._http_trigger(path, target.query, body)
        except _BadRequest as err:
            self._send_text(err.status, str(err))

    # -- HTTP triggers -----------------------------------------------------------------------------------

    def _http_trigger(self, path: str, query: str, body: bytes) -> None:
        dispatch = self.server.dispatch
        relative = _strip_prefix(path, dispatch.route_prefix)
        if relative is None:
            raise _BadRequest(404, f"Not found: {path} (HTTP functions are under /{dispatch.route_prefix})")
        resolved = dispatch.routes.resolve(relative, self.command)
        if resolved is None:
            raise _BadRequest(404, f"No HTTP function matches {self.command} {path}")
        if isinstance(resolved, list):
            # The Functions host has no 405: no function matches this method and route.
            logger.warning(
                "%s %s: no HTTP function accepts %s on this route (it accepts %s)",
                self.command,
                path,
                self.command,
                ", ".join(resolved),
            )
            raise _BadRequest(404, f"No HTTP function matches {self.command} {path}")
        route, route_params = resolved
        function = dispatch.functions[route.function_name.lower()]
        request = func.HttpRequest(
            method=self.command,
            url=f"http://{self.headers.get('Host') or self.server.base_url.removeprefix('http://')}{self.path}",
            headers=_forwarded_for(_joined(self.headers.items(), ", "), self.client_address),
            params=_joined(parse_qsl(query, keep_blank_values=True), ","),
            route_params=route_params,
            body=body,
        )
        try:
            result = dispatch.invoker.invoke(
                function, request, "This function was programmatically called via the host APIs."
            )
        except Exception:
            # The invoker has logged the traceback; like the host, tell the caller nothing more.
            self._send(500, b"", [])
            return
        self._send_function_result(function, result)

    def _send_function_result(self, function: FunctionInfo, result: Any) -> None:
        if result is None:
            self._send(204, b"", [])
            return
        if isinstance(result, str):
            result = func.HttpResponse(result)
        if not isinstance(result, func.HttpResponse):
            logger.error(
                "Function '%s' returned %s; an HTTP function must return func.HttpResponse or str",
                function.name,
                type(result).__name__,
            )
            self._send(500, b"", [])
            return
        headers = [
            (name, value)
            for name, value in result.headers.items()
            if name.lower() not in ("content-length", "transfer-encoding", "connection")
        ]
        if not any(name.lower() == "content-type" for name, _ in headers):
            mimetype = result.mimetype
            content_type = (
                f"{mimetype}; charset={result.charset}" if mimetype.startswith("text/") else mimetype
            )
            headers.append(("Content-Type", content_type))
        self._send(int(result.status_code), result.get_body() or b"", headers)

    # -- admin API -----------------------------------------------------------------------------------------

    def _admin(self, name: str, body: bytes) -> None:
        if self.command != "POST":
            self._send_text(405, 'Use POST /admin/functions/<name> with {"input": "..."}', {"Allow": "POST"})
            return
        function = self.server.dispatch.function(name)
        if function is None:
            raise _BadRequest(404, f"No function named {name!r} is loaded by the dev host")
        document = _json(body) if body.strip() else {}
        if not isinstance(document, dict):
            raise _BadRequest(400, 'Expected a JSON object: {"input": "..."}')
        raw_input = document.get("input", "")
        if function.trigger_type == HTTP:
            raise _BadRequest(400, f"{function.name} is an HTTP function: call it at its URL instead")
        if function.trigger_type == TIMER:
            value: Any = timer_request(past_due=False)
        elif function.trigger_type == QUEUE:
            text = raw_input if isinstance(raw_input, str) else json.dumps(raw_input)
            value = queue_message(text.encode("utf-8"))
        elif function.trigger_type == EVENT_GRID:
            payload = _json(raw_input.encode("utf-8")) if isinstance(raw_input, str) else raw_input
            try:
                events = event_grid_events(payload)
            except ValueError as err:
                raise _BadRequest(400, f"input is not an Event Grid event: {err}") from err
            if len(events) != 1:
                raise _BadRequest(400, "input must be exactly one Event Grid event")
            value = events[0]
        else:  # pragma: no cover - index_functions keeps only the kinds above
            raise _BadRequest(400, f"{function.trigger_type} functions cannot be run from the admin API")
        invoker = self.server.dispatch.invoker

        # Core Tools answers 202 at once and runs the function in the background.
        threading.Thread(
            target=invoker.invoke_logged,
            args=(function, value, "This function was programmatically called via the host APIs."),
            name=f"admin-{function.name}",
            daemon=True,
        ).start()
        self._send(202, b"", [])

    # -- Event Grid webhook ----------------------------------------------------------------------------------

    def _event_grid(self, query: dict[str, str], body: bytes) -> None:
        if self.command == "OPTIONS":
            # CloudEvents webhook validation handshake.
            origin = self.headers.get("WebHook-Request-Origin", "*")
            self._send(200, b"", [("WebHook-Allowed-Origin", origin), ("WebHook-Allowed-Rate", "*")])
            return
        if self.command != "POST":
            self._send_text(405, "The Event Grid webhook accepts POST", {"Allow": "POST, OPTIONS"})
            return
        name = query.get("functionName", "")
        if not name:
            raise _BadRequest(400, "Missing query parameter functionName")
        function = self.server.dispatch.function(name)
        if function is None or function.trigger_type != EVENT_GRID:
            raise _BadRequest(404, f"No Event Grid trigger function named {name!r}")
        kind = (self.headers.get("aeg-event-type") or "").strip().lower()
        if kind == "subscriptionvalidation":
            self._validate_subscription(function, body)
        elif kind == "notification":
            self._notify(function, body)
        elif kind == "unsubscribe":
            self._send(202, b"", [])
        else:
            raise _BadRequest(
                400,
                "Missing or unknown aeg-event-type header (expected Notification or SubscriptionValidation)",
            )

    def _validate_subscription(self, function: FunctionInfo, body: bytes) -> None:
        payload = _json(body)
        first = payload[0] if isinstance(payload, list) and payload else payload
        data = first.get("data") if isinstance(first, dict) else None
        code = data.get("validationCode") if isinstance(data, dict) else None
        if not isinstance(code, str):
            raise _BadRequest(400, "SubscriptionValidation event lacks data.validationCode")
        logger.info("Performed the Event Grid subscription validation handshake for '%s'", function.name)
        self._send_json(200, {"validationResponse": code})

    def _notify(self, function: FunctionInfo, body: bytes) -> None:
        try:
            events = event_grid_events(_json(body))
        except ValueError as err:
            raise _BadRequest(400, f"Bad Event Grid payload: {err}") from err
        failed = 0
        for event in events:
            try:
                self.server.dispatch.invoker.invoke(
                    function, event, f"EventGrid trigger fired for event {event.id}"
                )
            except Exception:
                failed += 1
        if failed:
            self._send_text(500, f"{failed} of {len(events)} event(s) failed in Functions.{function.name}")
        else:
            self._send(202, b"", [])

    # -- plumbing -----------------------------------------------------------------------------------------

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            return self._read_chunked()
        length_text = self.headers.get("Content-Length")
        if not length_text:
            return b""
        try:
            length = int(length_text)
        except ValueError as err:
            raise _BadRequest(400, "Invalid Content-Length") from err
        if length < 0 or length > MAX_BODY_BYTES:
            self.close_connection = True
            self._linger = True
            raise _BadRequest(413, "Request body too large")
        return self.rfile.read(length)

    def _read_chunked(self) -> bytes:
        chunks: list[bytes] = []
        total = 0
        while True:
            size_line = self.rfile.readline(1024).split(b";", 1)[0].strip()
            try:
                size = int(size_line, 16)
            except ValueError as err:
                self.close_connection = True
                raise _BadRequest(400, "Invalid chunked body") from err
            if size == 0:
                while self.rfile.readline(1024).strip():  # trailers
                    pass
                return b"".join(chunks)
            total += size
            if total > MAX_BODY_BYTES:
                self.close_connection = True
                self._linger = True
                raise _BadRequest(413, "Request body too large")
            chunks.append(self.rfile.read(size))
            self.rfile.readline(1024)

    def _send_text(self, status: int, text: str, headers: Mapping[str, str] | None = None) -> None:
        extra = list((headers or {}).items())
        self._send(status, text.encode("utf-8"), [("Content-Type", "text/plain; charset=utf-8"), *extra])

    def _send_json(self, status: int, document: Any) -> None:
        self._send(status, json.dumps(document).encode("utf-8"), [("Content-Type", "application/json")])

    def _send(self, status: int, body: bytes, headers: list[tuple[str, str]]) -> None:
        self.send_response(status, _phrase(status))
        for name, value in headers:
            self.send_header(name, value)
        if self.close_connection and not any(name.lower() == "connection" for name, _ in headers):
            self.send_header("Connection", "close")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)


def _phrase(status: int) -> str:
    # RFC 9110's phrase for 414, which Kestrel sends; Python 3.11 still has RFC 2616's "Request-URI Too Long".
    if status == 414:
        return "URI Too Long"
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return ""


class _HeaderReader:
    """The header block, read under Kestrel's limits, as the one line its first readline returns."""

    def __init__(self, source: io.BufferedIOBase) -> None:
        self._source: io.BufferedIOBase | None = source

    def readline(self, size: int = -1) -> bytes:
        if self._source is None:
            return b""
        source, self._source = self._source, None
        lines: list[bytes] = []
        total = 0
        while True:
            line = source.readline(MAX_HEADERS_TOTAL_BYTES - total + 1)
            if line in (b"\r\n", b"\n", b""):
                return b"".join([*lines, line])
            total += len(line)
            if total > MAX_HEADERS_TOTAL_BYTES:
                raise _HeadersTooLarge(f"request headers over {MAX_HEADERS_TOTAL_BYTES} bytes")
            if len(lines) == MAX_HEADER_COUNT:
                raise _HeadersTooLarge(f"more than {MAX_HEADER_COUNT} request headers")
            lines.append(line)


def _drain(connection: socket.socket) -> None:
    """Lingering close: end our side, then read and discard what the client still sends (bounded), so
    that closing with unread input does not reset the connection before the client reads our answer."""
    deadline = time.monotonic() + LINGER_SECONDS
    drained = 0
    try:
        connection.shutdown(socket.SHUT_WR)
        while drained < LINGER_BYTES and (left := deadline - time.monotonic()) > 0:
            connection.settimeout(left)
            chunk = connection.recv(65536)
            if not chunk:
                return
            drained += len(chunk)
    except OSError:  # timed out, or the client is gone: either way there is nothing left to do
        pass


def _forwarded_for(headers: dict[str, str], peer: tuple[Any, ...]) -> dict[str, str]:
    """``headers`` with the peer appended to X-Forwarded-For as the last hop, as App Service's front end
    appends the client address it saw (hops the client sent stay, before it: they prove nothing)."""
    host, port = str(peer[0]), int(peer[1])
    hop = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    sent = [value for name, value in headers.items() if name.lower() == "x-forwarded-for"]
    forwarded = {name: value for name, value in headers.items() if name.lower() != "x-forwarded-for"}
    forwarded["X-Forwarded-For"] = ", ".join([*sent, hop])
    return forwarded


def _strip_prefix(path: str, prefix: str) -> str | None:
    """The path below the route prefix (no leading slash), or None when outside it."""
    relative = path.lstrip("/")
    if not prefix:
        return relative.rstrip("/")
    if relative.lower() == prefix.lower():
        return ""
    if relative.lower().startswith(prefix.lower() + "/"):
        return relative[len(prefix) + 1 :].rstrip("/")
    return None


def _joined(pairs: Any, separator: str) -> dict[str, str]:
    joined: dict[str, str] = {}
    for name, value in pairs:
        joined[name] = f"{joined[name]}{separator}{value}" if name in joined else value
    return joined


def _json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError as err:
        raise _BadRequest(400, f"Body is not valid JSON: {err}") from err
