"""A local webhook consumer for tests: an HTTPS server on 127.0.0.1 (a free port) that does what
docs/webhook-consumer.md asks of a dispatch app.

It verifies each request's signature with ``verify_signature`` and the key a real consumer reads from Key
Vault (the secret ``signing_key_name(secret_name)`` of the secret the body names — a consumer serving several
secrets picks the key that way, then verifies with it — read from the store it is given at each request),
and keeps a
key set as a real consumer does: ``set`` adds the value (old and new accepted), ``test`` answers 2xx only
if the value is accepted, ``finish`` keeps only the value of rotation ``version`` (409 when it holds no
such value). Every request is recorded as a ``Call``: step, secret name, version, whether a value came,
the signature verdict, the headers, the answer. Never a value: values live only in the key set (ask
``accepts``) and in ``raw`` (the last requests as sent, for replay tests; kept out of repr).

Tests script failures per step: ``fail("set", 500, times=2)``, ``fail("test", 400)``,
``fail("set", 503, times=None)`` (always), ``redirect("set", url)``, ``slow("set", 2.0)``. A scripted
answer is given after the request was recorded and before the key set changes (so a failed step changes
nothing); a slow one sleeps, then answers normally.

Usage::

    with WebhookConsumer.start(store, tmp_path, current="old-value") as consumer:
        rotator = WebhookRotator(store, keys, ca_bundle=consumer.ca_bundle, backoff=0.01)
        rotator.bind(TargetSecret("api-key", None, consumer.url, ""))
        rotator.set(TargetSecret("api-key", "rot-1", consumer.url, "old-value"), "new-value")
        assert consumer.accepts("old-value") and consumer.accepts("new-value")
"""

from __future__ import annotations

import json
import logging
import socket
import socketserver
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from devtools.keyvault_emulator.certs import generate_certificate, server_context, write_certificate
from shared.domain.errors import DomainError
from shared.domain.targets import SIGNATURE_HEADER, TIMESTAMP_HEADER, signing_key_name, verify_signature
from shared.ports import SecretStore

log = logging.getLogger(__name__)

PATH = "/rotate"
STEPS = frozenset({"set", "test", "finish"})


@dataclass
class Call:
    """One request as the consumer saw it, recorded on arrival. ``step``/``secret_name``/``version`` are
    None when the body did not carry them; ``status`` is what the consumer answered (None while it has
    not answered yet: a slow answer)."""

    path: str
    step: str | None
    secret_name: str | None
    version: str | None
    has_value: bool
    signature_ok: bool
    headers: dict[str, str]
    received: float
    status: int | None = None


@dataclass(frozen=True)
class RawRequest:
    """A request as sent (for replay tests): the body carries the value, so it is kept out of repr."""

    path: str
    headers: dict[str, str]
    body: bytes = field(repr=False)


@dataclass
class _Script:
    status: int | None  # None: answer normally (after ``delay``)
    remaining: int | None  # None: every call
    delay: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, consumer: WebhookConsumer, context: ssl.SSLContext | None) -> None:
        self.consumer = consumer
        self.context = context
        super().__init__(("127.0.0.1", 0), _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind does a reverse DNS lookup (getfqdn) that can stall.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = "127.0.0.1", int(self.server_address[1])

    def finish_request(self, request: Any, client_address: Any) -> None:
        request.settimeout(10)
        request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.context is None:
            _Handler(request, client_address, self)
            return
        try:
            tls = self.context.wrap_socket(request, server_side=True)  # in the request's thread
        except (ssl.SSLError, OSError) as err:
            log.info("TLS handshake with the webhook consumer failed: %s", err)
            self.consumer.handshake_failures += 1
            request.close()
            return
        try:
            _Handler(tls, client_address, self)
        finally:
            tls.close()


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    timeout = 10

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        status, headers = self.server.consumer.handle(self.path, dict(self.headers.items()), body)
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self) -> None:
        self.do_POST()

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("webhook consumer: " + format, *args)


class WebhookConsumer:
    """The test consumer. ``url`` (``https://127.0.0.1:<port>/rotate``) is its rotation-target and names
    its signing key; ``ca_bundle`` the PEM to trust; ``calls`` every request in arrival order; ``now`` the
    clock signatures are checked against (shift it to replay a request later)."""

    def __init__(self, store: SecretStore, *, tls: bool, directory: Path) -> None:
        self.store = store
        self.calls: list[Call] = []
        self.raw: list[RawRequest] = []
        self.handshake_failures = 0
        self.now: Callable[[], float] = time.time
        self._keys: dict[str | None, str] = {}  # rotation id (None: not made by a rotation) -> value
        self._scripts: dict[str, deque[_Script]] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        context: ssl.SSLContext | None = None
        self.ca_bundle: str | None = None
        if tls:
            cert_pem, key_pem = generate_certificate()
            context = server_context(cert_pem, key_pem)
            bundle = directory / f"webhook-consumer-{id(self):x}.pem"
            write_certificate(bundle, cert_pem)
            self.ca_bundle = str(bundle)
        self._server = _Server(self, context)
        self.port = int(self._server.server_address[1])
        self.base_url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        self.url = self.base_url + PATH
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="webhook-consumer", daemon=True
        )

    @classmethod
    @contextmanager
    def start(
        cls,
        store: SecretStore,
        directory: Path,
        *,
        current: str | None = None,
        current_version: str | None = None,
        tls: bool = True,
    ) -> Iterator[WebhookConsumer]:
        """Serve until the block ends. ``current``: the value the consumer accepts before any rotation
        (made by rotation ``current_version``, None when not by a rotation); ``directory``: where the CA
        bundle is written; ``tls=False`` serves plain http (for the loopback-http tests)."""
        consumer = cls(store, tls=tls, directory=directory)
        if current is not None:
            consumer._keys[current_version] = current
        consumer._thread.start()
        try:
            yield consumer
        finally:
            consumer.stop()

    def stop(self) -> None:
        """Stop serving (a test may stop it early to model a consumer that is down); idempotent."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    # What tests script and ask.

    def fail(
        self, step: str, status: int, *, times: int | None = 1, headers: dict[str, str] | None = None
    ) -> None:
        """The next ``times`` ``step`` requests (None: every one) are answered ``status`` and change
        nothing. Scripts queue: ``fail("set", 500, times=2)`` then a normal answer."""
        self._script(step, _Script(status, times, headers=dict(headers or {})))

    def redirect(self, step: str, location: str, *, status: int = 302, times: int | None = 1) -> None:
        """Answer the next ``times`` ``step`` requests with a redirect to ``location``."""
        self._script(step, _Script(status, times, headers={"Location": location}))

    def slow(self, step: str, seconds: float, *, times: int | None = 1) -> None:
        """Wait ``seconds`` before answering the next ``times`` ``step`` requests (then answer normally)."""
        self._script(step, _Script(None, times, delay=seconds))

    def accept(self, value: str, version: str | None) -> None:
        """Take ``value`` (made by rotation ``version``) as a valid key, as an operator configures a
        consumer with a secret's first value."""
        with self._lock:
            self._keys[version] = value

    def accepts(self, value: str) -> bool:
        """Whether the consumer's key set holds ``value``."""
        with self._lock:
            return value in self._keys.values()

    def key_versions(self) -> set[str | None]:
        """The rotation ids of the values it holds (None: a value not made by a rotation)."""
        with self._lock:
            return set(self._keys)

    def calls_to(self, step: str) -> list[Call]:
        return [c for c in self.calls if c.step == step]

    # The server side.

    def _script(self, step: str, script: _Script) -> None:
        with self._lock:
            self._scripts.setdefault(step, deque()).append(script)

    def _next_script(self, step: str | None) -> _Script | None:
        with self._lock:
            queue = self._scripts.get(step or "")
            if not queue:
                return None
            script = queue[0]
            if script.remaining is not None:
                script.remaining -= 1
                if script.remaining <= 0:
                    queue.popleft()
            return script

    def _key(self, secret_name: object) -> bytes | None:
        if not isinstance(secret_name, str):
            return None
        try:
            return self.store.get_value(signing_key_name(secret_name)).value.encode("utf-8")
        except DomainError:
            return None

    def handle(self, path: str, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, str]]:
        received = time.monotonic()
        self.raw.append(RawRequest(path, headers, body))
        document: dict[str, Any] = {}
        try:
            parsed = json.loads(body)
            if isinstance(parsed, dict):
                document = parsed
        except ValueError:
            pass
        key = self._key(document.get("secret_name"))  # which key; the signature says whether to trust it
        signature_ok = key is not None and verify_signature(
            key, headers.get(TIMESTAMP_HEADER, ""), body, headers.get(SIGNATURE_HEADER, ""), self.now()
        )
        step = document.get("step") if isinstance(document.get("step"), str) else None
        value = document.get("value")
        version = document.get("version") if isinstance(document.get("version"), str) else None
        name = document.get("secret_name")
        call = Call(
            path=path,
            step=step,
            secret_name=name if isinstance(name, str) else None,
            version=version,
            has_value="value" in document,
            signature_ok=signature_ok,
            headers=headers,
            received=received,
        )
        self.calls.append(call)
        call.status, answer_headers = self._answer(path, step, version, value, signature_ok)
        return call.status, answer_headers

    def _answer(
        self, path: str, step: str | None, version: str | None, value: Any, signature_ok: bool
    ) -> tuple[int, dict[str, str]]:
        if path != PATH:
            return 404, {}
        if not signature_ok:
            return 401, {}
        if step not in STEPS or not version:
            return 400, {}
        script = self._next_script(step)
        if script is not None:
            if script.delay:
                self._stopping.wait(script.delay)
            if script.status is not None:
                return script.status, script.headers
        with self._lock:
            if step == "set":
                if not isinstance(value, str) or not value:
                    return 400, {}
                self._keys[version] = value
                return 204, {}
            if step == "test":
                if not isinstance(value, str) or value not in self._keys.values():
                    return 409, {}
                return 204, {}
            # finish: keep only the value of rotation ``version``.
            if value is not None:
                return 400, {}
            if version not in self._keys:
                return 409, {}
            self._keys = {version: self._keys[version]}
            return 204, {}
