"""What the app's SDK clients take from the process environment, and when: proxies (HTTP_PROXY,
HTTPS_PROXY, NO_PROXY) once, when shared/bootstrap.py builds a client, never per request; ``~/.netrc``
never. Real clients against Azurite, through a forwarding proxy that records what passed it."""

from __future__ import annotations

import http.client
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from devtools.azurite import AzuriteProcess
from devtools.keyvault_emulator import EmulatorProcess
from shared.bootstrap import Container
from shared.config import Settings
from tests.integration.conftest import app_settings

PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")


class _Forwarder(BaseHTTPRequestHandler):
    """An HTTP proxy for plain-http targets: forwards the request, records its absolute URL."""

    seen: list[str]

    def _forward(self) -> None:
        self.seen.append(self.path)
        target = urlsplit(self.path)
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        hop_by_hop = ("proxy-connection", "connection")
        headers = {k: v for k, v in self.headers.items() if k.lower() not in hop_by_hop}
        upstream = http.client.HTTPConnection(target.netloc, timeout=10)
        try:
            path = target.path + (f"?{target.query}" if target.query else "")
            upstream.request(self.command, path, body, headers)
            answer = upstream.getresponse()
            payload = answer.read()
            self.send_response(answer.status, answer.reason)
            for key, value in answer.getheaders():
                if key.lower() not in ("transfer-encoding", "connection", "content-length"):
                    self.send_header(key, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
        finally:
            upstream.close()

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_MERGE = _forward

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def proxy() -> Iterator[tuple[str, list[str]]]:
    seen: list[str] = []
    handler = type("Recording", (_Forwarder,), {"seen": seen})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("NETRC", raising=False)
    return monkeypatch


def _container(azurite: AzuriteProcess, kv_emulator: EmulatorProcess) -> Container:
    return Container(Settings(app_settings(azurite, kv_emulator)))


def test_a_proxy_in_the_environment_carries_the_storage_calls(
    azurite: AzuriteProcess,
    kv_emulator: EmulatorProcess,
    proxy: tuple[str, list[str]],
    clean_environment: pytest.MonkeyPatch,
) -> None:
    address, seen = proxy
    clean_environment.setenv("HTTP_PROXY", address)
    container = _container(azurite, kv_emulator)
    list(container.table_service.list_tables())
    container.queue_service.get_service_properties()
    table_port = str(urlsplit(container.table_service.url).port)
    queue_port = str(urlsplit(container.queue_service.url).port)
    assert any(f":{table_port}/" in url for url in seen), seen
    assert any(f":{queue_port}/" in url for url in seen), seen


def test_no_proxy_exempts_the_endpoint(
    azurite: AzuriteProcess,
    kv_emulator: EmulatorProcess,
    proxy: tuple[str, list[str]],
    clean_environment: pytest.MonkeyPatch,
) -> None:
    address, seen = proxy
    clean_environment.setenv("HTTP_PROXY", address)
    clean_environment.setenv("NO_PROXY", "127.0.0.1")
    container = _container(azurite, kv_emulator)
    list(container.table_service.list_tables())
    assert seen == []


def test_the_environment_is_read_when_the_client_is_made_not_per_request(
    azurite: AzuriteProcess,
    kv_emulator: EmulatorProcess,
    proxy: tuple[str, list[str]],
    clean_environment: pytest.MonkeyPatch,
) -> None:
    address, seen = proxy
    container = _container(azurite, kv_emulator)
    list(container.table_service.list_tables())
    clean_environment.setenv("HTTP_PROXY", address)  # too late for the client made above
    list(container.table_service.list_tables())
    assert seen == []


def test_netrc_credentials_never_replace_the_app_s_own(
    azurite: AzuriteProcess,
    kv_emulator: EmulatorProcess,
    clean_environment: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """``requests`` would put a ``~/.netrc`` entry for the host on every request as basic auth, in place
    of the storage account's signature (Azurite then refuses it)."""
    netrc = tmp_path / ".netrc"
    netrc.write_text("machine 127.0.0.1 login intruder password not-the-account-key\n")
    netrc.chmod(0o600)
    container = _container(azurite, kv_emulator)
    table = container.table_service.create_table_if_not_exists("netrcprobe")
    table.upsert_entity({"PartitionKey": "p", "RowKey": "r", "v": "x"})
    assert table.get_entity("p", "r")["v"] == "x"
