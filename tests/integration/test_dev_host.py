"""The dev host (devtools.host) serving a sample app over real HTTP, with real timers and real Azurite queues.

Each host is a child process started with ``HostProcess.start``; the sample app (devhost_sample/sample_app.py)
records what its non-HTTP functions saw as JSON lines in a per-host marker directory.
"""

from __future__ import annotations

import base64
import json
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import Message
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from azure.core.exceptions import ResourceExistsError
from azure.storage.queue import QueueClient, TextBase64EncodePolicy

from devtools.azurite import AzuriteProcess
from devtools.host import HostProcess
from devtools.host.process import REPO_ROOT
from devtools.host.triggers import QUEUE_API_VERSION
from tests.waiting import eventually

SAMPLE_DIR = Path(__file__).parent / "devhost_sample"
SAMPLE_APP = "sample_app:app"


@dataclass
class Reply:
    status: int
    headers: Message
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def call(method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None) -> Reply:
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return Reply(response.status, response.headers, response.read())
    except urllib.error.HTTPError as err:
        return Reply(err.code, err.headers, err.read())


def records(markers: Path, function: str) -> list[dict[str, Any]]:
    path = markers / f"{function}.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def sample_env(markers: Path, **extra: str) -> dict[str, str]:
    markers.mkdir(parents=True, exist_ok=True)
    return {
        # Required, as under Core Tools, because the sample apps have non-HTTP triggers; the queue pollers
        # use DEVHOST_STORAGE, so this one is never connected to.
        "AzureWebJobsStorage": "UseDevelopmentStorage=true",
        # Empty means unset, whatever the parent environment holds.
        "AZURE_FUNCTIONS_ENVIRONMENT": "",
        "DEVHOST_MARKER_DIR": str(markers),
        "DEVHOST_YEARLY_SCHEDULE": "0 0 0 1 1 *",
        "DEVHOST_QUEUE": "devhost-unused",
        "DEVHOST_FAILING_QUEUE": "devhost-unused-failing",
        **extra,
    }


@pytest.fixture(scope="module")
def markers(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("devhost-markers")


@pytest.fixture(scope="module")
def host(markers: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostProcess]:
    """A host without storage: HTTP, timers, admin API, Event Grid. Queue pollers cannot start here."""
    settings = tmp_path_factory.mktemp("devhost-settings") / "local.settings.json"
    settings.write_text(
        json.dumps(
            {
                "IsEncrypted": False,
                "Values": {
                    "FUNCTIONS_WORKER_RUNTIME": "python",
                    "DEVHOST_GREETING": "from local.settings.json",
                    # Already set in the environment: the environment must win, as in Core Tools.
                    "DEVHOST_MARKER_DIR": "/nonexistent/must-not-be-used",
                    # Set but empty in the environment: empty counts as unset, the file's value wins.
                    "DEVHOST_EMPTY_IN_ENVIRONMENT": "from local.settings.json",
                    # Core Tools runs the app as Development whatever the file says.
                    "AZURE_FUNCTIONS_ENVIRONMENT": "Production",
                },
            }
        ),
        encoding="utf-8",
    )
    env = sample_env(markers, DEVHOST_EMPTY_IN_ENVIRONMENT="")
    with HostProcess.start(app=SAMPLE_APP, cwd=SAMPLE_DIR, env=env, settings=settings) as proc:
        yield proc


# -- HTTP triggers ---------------------------------------------------------------------------------


def test_route_parameters_query_headers_and_body_reach_the_function(host: HostProcess) -> None:
    reply = call(
        "POST",
        f"{host.url}/api/greet/ada/3/docs/a%20b/c?x=1&x=2&flag",
        body=b"payload",
        headers={"X-Sample": "hello"},
    )

    assert reply.status == 200
    assert reply.headers["Content-Type"] == "application/json"
    assert reply.headers["X-Handled-By"] == "greet"
    seen = reply.json()
    assert seen["method"] == "POST"
    assert seen["url"] == f"{host.url}/api/greet/ada/3/docs/a%20b/c?x=1&x=2&flag"
    assert seen["route_params"] == {"name": "ada", "count": "3", "rest": "docs/a b/c"}
    assert seen["params"] == {"x": "1,2", "flag": ""}
    assert seen["header"] == "hello"
    assert seen["body"] == "payload"


def test_typed_parameter_that_does_not_match_is_404(host: HostProcess) -> None:
    assert call("GET", f"{host.url}/api/greet/ada/three/docs").status == 404
    assert call("GET", f"{host.url}/api/items/abc").status == 404


def test_catch_all_may_be_empty(host: HostProcess) -> None:
    reply = call("GET", f"{host.url}/api/greet/ada/3")

    assert reply.status == 200
    assert reply.json()["route_params"] == {"name": "ada", "count": "3"}


def test_a_method_the_binding_does_not_allow_is_404_like_the_functions_host(host: HostProcess) -> None:
    allowed = call("GET", f"{host.url}/api/items/42")
    wrong = call("DELETE", f"{host.url}/api/items/42")
    wrong_on_literal_route = call("GET", f"{host.url}/api/items/new")

    assert (allowed.status, allowed.body) == (200, b"item 42")
    assert allowed.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert wrong.status == 404
    assert "Allow" not in wrong.headers
    assert wrong_on_literal_route.status == 404
    assert host.wait_for_output("no HTTP function accepts DELETE on this route (it accepts GET)")


def test_function_auth_level_is_not_enforced_and_literal_route_wins(host: HostProcess) -> None:
    reply = call("POST", f"{host.url}/api/items/new", body=b"\x00\x01binary")

    assert reply.status == 201
    assert reply.body == b"\x00\x01binary"
    assert reply.headers["Content-Type"] == "application/octet-stream"


def test_async_function_gets_a_context_with_a_fresh_invocation_id(host: HostProcess) -> None:
    first = call("POST", f"{host.url}/api/echo", body=b'{"n": 1}').json()
    second = call("POST", f"{host.url}/api/echo", body=b'{"n": 2}').json()

    assert first["body"] == {"n": 1}
    assert first["function_name"] == "echo"
    assert uuid.UUID(first["invocation_id"])
    assert first["invocation_id"] != second["invocation_id"]


def test_unhandled_exception_is_500_with_an_empty_body_and_the_traceback_logged(host: HostProcess) -> None:
    reply = call("GET", f"{host.url}/api/boom")

    assert reply.status == 500
    assert reply.body == b""
    assert host.wait_for_output("RuntimeError: the sample function failed on purpose")
    assert "Traceback (most recent call last)" in host.output()


def test_default_route_is_the_function_name_case_insensitively(host: HostProcess) -> None:
    reply = call("GET", f"{host.url}/api/defaultroute")

    assert (reply.status, reply.body) == (200, b"default route")


def test_unknown_paths_are_404(host: HostProcess) -> None:
    assert call("GET", f"{host.url}/api/no-such-function").status == 404
    assert call("GET", f"{host.url}/not-under-the-prefix").status == 404


def test_settings_file_values_are_loaded_but_the_environment_wins(host: HostProcess, markers: Path) -> None:
    seen = call("GET", f"{host.url}/api/greet/ada/1").json()

    assert seen["greeting"] == "from local.settings.json"
    assert seen["empty_in_environment"] == "from local.settings.json"  # empty counts as unset
    eventually(
        lambda: records(markers, "tick"), "the timer to write into the environment's marker dir", timeout=5
    )


def test_functions_environment_is_development_whatever_the_settings_file_says(host: HostProcess) -> None:
    seen = call("GET", f"{host.url}/api/greet/ada/1").json()

    assert seen["environment"] == "Development"
    assert "sets AZURE_FUNCTIONS_ENVIRONMENT to 'Production', but Core Tools always runs" in host.output()


def test_functions_environment_from_the_real_environment_wins(tmp_path: Path) -> None:
    settings = tmp_path / "local.settings.json"
    settings.write_text(json.dumps({"Values": {"AZURE_FUNCTIONS_ENVIRONMENT": "Production"}}))
    env = sample_env(tmp_path / "markers", AZURE_FUNCTIONS_ENVIRONMENT="Staging")

    with HostProcess.start(app=SAMPLE_APP, cwd=SAMPLE_DIR, env=env, settings=settings) as proc:
        seen = call("GET", f"{proc.url}/api/greet/ada/1").json()

    assert seen["environment"] == "Staging"
    assert "AZURE_FUNCTIONS_ENVIRONMENT to" not in proc.output()


def test_startup_lists_functions_skips_unsupported_ones_and_warns_about_keys(host: HostProcess) -> None:
    output = host.output()

    assert f"greet: [ALL] {host.url}/api/greet/{{name}}/{{count:int}}/{{*rest}}" in output
    assert f"get_item: [GET] {host.url}/api/items/{{id:int}}" in output
    assert "tick: timerTrigger (*/2 * * * * *)" in output
    assert "record_message: queueTrigger (queue devhost-unused on DEVHOST_STORAGE)" in output
    assert (
        f"on_event: eventGridTrigger (POST {host.url}/runtime/webhooks/eventgrid?functionName=on_event)"
        in output
    )
    assert "unsupported_blob: blobTrigger is not supported by the dev host" in output
    assert "with_output: bindings other than the trigger (queue 'out') are not supported" in output
    assert "auth_level FUNCTION/ADMIN is not enforced locally" in output
    assert "Queue function 'record_message' will not be polled" in output
    assert call("GET", f"{host.url}/api/with-output").status == 404


# -- request limits and X-Forwarded-For, as Core Tools (Kestrel) and App Service's front end ---------

HEADERS_APP = "headers_app:app"


@dataclass
class RawReply:
    status_line: str
    headers: dict[str, str]
    body: bytes
    local_port: int


def raw_exchange(base_url: str, request: bytes) -> RawReply:
    """Send ``request`` byte for byte and read until the server closes. A reset connection raises."""
    target = urlsplit(base_url)
    assert target.hostname and target.port
    with socket.create_connection((target.hostname, target.port), timeout=10) as sock:
        local_port = sock.getsockname()[1]
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    status_line, *lines = head.decode("iso-8859-1").split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
    return RawReply(status_line, headers, body, local_port)


@pytest.fixture(scope="module")
def headers_host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostProcess]:
    settings = _empty_settings(tmp_path_factory.mktemp("devhost-headers"))
    env = {"AzureWebJobsStorage": ""}
    with HostProcess.start(app=HEADERS_APP, cwd=SAMPLE_DIR, env=env, settings=settings) as proc:
        yield proc


def _get(path: str, *headers: str) -> bytes:
    return "\r\n".join([f"GET {path} HTTP/1.1", "Host: localhost", *headers, "", ""]).encode("latin-1")


@pytest.mark.parametrize("query_length", [9_000, 70_000, 1_000_000])
def test_a_request_line_over_8_kb_is_414_never_a_dropped_connection(
    headers_host: HostProcess, query_length: int
) -> None:
    # 70 KB is over the standard library's own 64 KB line limit, where the host used to drop the connection.
    reply = raw_exchange(headers_host.url, _get(f"/api/headers?q={'a' * query_length}"))

    assert reply.status_line == "HTTP/1.1 414 URI Too Long"
    assert reply.headers["connection"] == "close"
    assert (reply.headers["content-length"], reply.body) == ("0", b"")
    assert headers_host.wait_for_output(
        "Refused a request with 414 URI Too Long: request line over 8192 bytes"
    )
    assert "Traceback" not in headers_host.output()


def test_a_request_line_within_8_kb_is_served(headers_host: HostProcess) -> None:
    reply = raw_exchange(headers_host.url, _get(f"/api/headers?q={'a' * 8_100}", "Connection: close"))

    assert reply.status_line == "HTTP/1.1 200 OK"


@pytest.mark.parametrize(
    "headers",
    [[f"X-Big: {'b' * 33_000}"], [f"X-Header-{n}: {'h' * 300}" for n in range(110)], ["X-Small: s"] * 101],
    ids=["one-header-over-32-kb", "headers-over-32-kb-in-all", "101-headers"],
)
def test_request_headers_over_kestrels_limits_are_431(headers_host: HostProcess, headers: list[str]) -> None:
    reply = raw_exchange(headers_host.url, _get("/api/headers", *headers))

    assert reply.status_line == "HTTP/1.1 431 Request Header Fields Too Large"
    assert reply.headers["connection"] == "close"
    assert "Traceback" not in headers_host.output()


def test_one_hundred_headers_are_served_like_kestrel(headers_host: HostProcess) -> None:
    # Host and Connection make 100 with these 98 (the standard library alone refuses more than 99).
    extra = [f"X-Header-{n}: {n}" for n in range(98)]

    reply = raw_exchange(headers_host.url, _get("/api/headers", "Connection: close", *extra))

    assert reply.status_line == "HTTP/1.1 200 OK"
    assert json.loads(reply.body)["x-header-97"] == "97"


@pytest.mark.parametrize(
    ("request_line", "status_line"),
    [
        ("GARBAGE", "HTTP/1.1 400 Bad Request"),
        ("GET /api/headers", "HTTP/1.1 400 Bad Request"),  # HTTP/0.9
        ("GET /api/headers HTTP/x.y", "HTTP/1.1 400 Bad Request"),
        ("GET /api/headers HTTP/2.0", "HTTP/1.1 505 HTTP Version Not Supported"),
    ],
)
def test_a_request_that_cannot_be_parsed_gets_a_status(
    headers_host: HostProcess, request_line: str, status_line: str
) -> None:
    # Only the request line: each is answered at once, without waiting for headers.
    reply = raw_exchange(headers_host.url, f"{request_line}\r\n".encode())

    assert reply.status_line == status_line
    assert reply.headers["connection"] == "close"


def test_the_peer_is_appended_to_x_forwarded_for_after_the_clients_hops(headers_host: HostProcess) -> None:
    plain = raw_exchange(headers_host.url, _get("/api/headers", "Connection: close"))
    forged = raw_exchange(
        headers_host.url,
        _get(
            "/api/headers",
            "X-Forwarded-For: 203.0.113.9",
            "x-forwarded-for: 198.51.100.7",
            "Connection: close",
        ),
    )

    assert json.loads(plain.body)["x-forwarded-for"] == f"127.0.0.1:{plain.local_port}"
    hops = json.loads(forged.body)["x-forwarded-for"]
    assert hops == f"203.0.113.9, 198.51.100.7, 127.0.0.1:{forged.local_port}"


# -- timers ----------------------------------------------------------------------------------------


def test_timer_runs_on_startup_and_then_on_its_schedule(host: HostProcess, markers: Path) -> None:
    ticks = eventually(
        lambda: len(records(markers, "tick")) >= 3 and records(markers, "tick"), "three ticks", timeout=8
    )

    assert all(tick["past_due"] is False for tick in ticks)
    output = host.output()
    assert "Executing 'Functions.tick' (Reason='Timer fired on host startup (run_on_startup)'" in output
    assert "Executing 'Functions.tick' (Reason='Timer fired at " in output


# -- admin API -------------------------------------------------------------------------------------


def test_admin_api_runs_a_timer_function_now(host: HostProcess, markers: Path) -> None:
    reply = call("POST", f"{host.url}/admin/functions/yearly", body=b'{"input": ""}')

    assert reply.status == 202
    ran = eventually(lambda: records(markers, "yearly"), "the yearly timer to run", timeout=5)
    assert ran == [{"past_due": False, "function_name": "yearly"}]


def test_admin_api_runs_a_queue_function_with_the_input_as_body(host: HostProcess, markers: Path) -> None:
    reply = call("POST", f"{host.url}/admin/functions/record_message", body=b'{"input": "hello from admin"}')

    assert reply.status == 202
    seen = eventually(lambda: records(markers, "record_message"), "the queue function to run", timeout=5)
    assert seen[0]["body"] == "hello from admin"
    assert seen[0]["dequeue_count"] == 1


def test_admin_api_runs_an_event_grid_function_with_a_json_event(host: HostProcess, markers: Path) -> None:
    event = {"id": "admin-ev", "subject": "from-admin", "eventType": "Custom.Test", "data": {"k": "v"}}

    reply = call(
        "POST", f"{host.url}/admin/functions/on_event", body=json.dumps({"input": json.dumps(event)}).encode()
    )

    assert reply.status == 202
    seen = eventually(
        lambda: [r for r in records(markers, "on_event") if r["id"] == "admin-ev"],
        "the admin-run event",
        timeout=5,
    )
    assert seen[0]["subject"] == "from-admin"
    assert seen[0]["data"] == {"k": "v"}
    assert seen[0]["event_time"] is None


def test_admin_api_rejects_unknown_and_http_functions(host: HostProcess) -> None:
    assert call("POST", f"{host.url}/admin/functions/no_such_function", body=b"{}").status == 404
    assert call("POST", f"{host.url}/admin/functions/unsupported_blob", body=b"{}").status == 404
    assert call("POST", f"{host.url}/admin/functions/greet", body=b"{}").status == 400
    assert call("POST", f"{host.url}/admin/functions/yearly", body=b"not json").status == 400


# -- Event Grid ------------------------------------------------------------------------------------

EVENT_GRID_URL = "/runtime/webhooks/eventgrid?functionName=on_event"


def _event(event_id: str, subject: str) -> dict[str, Any]:
    return {
        "id": event_id,
        "topic": "/subscriptions/0000/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv",
        "subject": subject,
        "eventType": "Microsoft.KeyVault.SecretNearExpiry",
        "eventTime": "2024-05-01T12:00:00.1234567Z",
        "data": {"ObjectName": subject, "VaultName": "kv"},
        "dataVersion": "1",
        "metadataVersion": "1",
    }


def test_event_grid_notification_calls_the_function_once_per_event(host: HostProcess, markers: Path) -> None:
    events = [_event("ev-1", "db-password"), _event("ev-2", "api-key")]

    reply = call(
        "POST",
        host.url + EVENT_GRID_URL,
        body=json.dumps(events).encode(),
        headers={"aeg-event-type": "Notification", "Content-Type": "application/json"},
    )

    assert reply.status == 202
    seen = eventually(
        lambda: len(records(markers, "on_event")) >= 2 and records(markers, "on_event"), "events", timeout=5
    )
    mine = {record["id"]: record for record in seen if record["id"] in ("ev-1", "ev-2")}
    assert mine["ev-1"]["subject"] == "db-password"
    assert mine["ev-2"]["event_type"] == "Microsoft.KeyVault.SecretNearExpiry"
    assert mine["ev-1"]["event_time"] == "2024-05-01T12:00:00.123456+00:00"
    assert mine["ev-2"]["data"] == {"ObjectName": "api-key", "VaultName": "kv"}


def test_event_grid_subscription_validation_answers_the_code(host: HostProcess, markers: Path) -> None:
    validation = {
        "id": "validation-1",
        "eventType": "Microsoft.EventGrid.SubscriptionValidationEvent",
        "subject": "",
        "eventTime": "2024-05-01T12:00:00Z",
        "data": {"validationCode": "512d38b6-c7b8-40c8-89fe-f46f9e9622b6"},
        "dataVersion": "1",
    }

    reply = call(
        "POST",
        host.url + EVENT_GRID_URL,
        body=json.dumps([validation]).encode(),
        headers={"aeg-event-type": "SubscriptionValidation"},
    )

    assert reply.status == 200
    assert reply.json() == {"validationResponse": "512d38b6-c7b8-40c8-89fe-f46f9e9622b6"}
    assert all(record["id"] != "validation-1" for record in records(markers, "on_event"))


def test_event_grid_function_failure_is_500_so_event_grid_retries(host: HostProcess) -> None:
    reply = call(
        "POST",
        host.url + EVENT_GRID_URL,
        body=json.dumps([_event("ev-fail", "fail")]).encode(),
        headers={"aeg-event-type": "Notification"},
    )

    assert reply.status == 500


def test_event_grid_bad_requests_are_rejected_with_a_reason(host: HostProcess) -> None:
    body = json.dumps([_event("ev-x", "x")]).encode()
    notification = {"aeg-event-type": "Notification"}

    missing_header = call("POST", host.url + EVENT_GRID_URL, body=body)
    bad_json = call("POST", host.url + EVENT_GRID_URL, body=b"[{", headers=notification)
    unknown = call(
        "POST", f"{host.url}/runtime/webhooks/eventgrid?functionName=nope", body=body, headers=notification
    )
    no_name = call("POST", f"{host.url}/runtime/webhooks/eventgrid", body=body, headers=notification)

    assert missing_header.status == 400
    assert b"aeg-event-type" in missing_header.body
    assert bad_json.status == 400
    assert unknown.status == 404
    assert no_name.status == 400


# -- command line and process lifecycle ------------------------------------------------------------


def _run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "devtools.host", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_help_says_it_is_a_development_tool_without_key_checks() -> None:
    result = _run_cli("--help")

    assert result.returncode == 0
    assert "Development-only" in result.stdout
    assert "not enforced" in result.stdout


@pytest.mark.parametrize("address", ["0.0.0.0", "192.168.1.10", "example.com"])  # noqa: S104
def test_non_loopback_host_is_refused(address: str) -> None:
    result = _run_cli("--host", address, "--port", "0")

    assert result.returncode == 2
    assert "refusing to bind" in result.stderr


def test_bad_timer_schedule_stops_the_host_naming_the_function(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError) as failure:
        HostProcess.start(app="bad_schedule_app:app", cwd=SAMPLE_DIR, env=sample_env(tmp_path), timeout=20)

    message = str(failure.value)
    assert "exited with code 1" in message
    assert "five_field_schedule" in message
    assert "has 5 fields, expected 6" in message


def test_sigterm_stops_the_host_promptly(tmp_path: Path) -> None:
    proc = HostProcess.start(app=SAMPLE_APP, cwd=SAMPLE_DIR, env=sample_env(tmp_path))
    assert call("GET", f"{proc.url}/api/items/1").status == 200

    started = time.monotonic()
    code = proc.stop()

    assert code == 0
    assert time.monotonic() - started < 4
    assert "Stopping the dev host" in proc.output()


# -- AzureWebJobsStorage, as Core Tools checks it -------------------------------------------------

STORAGE_MESSAGE = (
    "Missing value for AzureWebJobsStorage in local.settings.json. This is required for all triggers other "
    "than httptrigger, kafkatrigger, rabbitmqtrigger, orchestrationTrigger, activityTrigger, entityTrigger."
)


def _empty_settings(tmp_path: Path, **values: str) -> Path:
    settings = tmp_path / "local.settings.json"
    settings.write_text(json.dumps({"IsEncrypted": False, "Values": values}), encoding="utf-8")
    return settings


@pytest.mark.parametrize("missing", ["", "   "])
def test_non_http_triggers_without_azurewebjobsstorage_refuse_to_start(tmp_path: Path, missing: str) -> None:
    env = sample_env(tmp_path / "markers", AzureWebJobsStorage=missing)

    with pytest.raises(RuntimeError) as failure:
        HostProcess.start(app=SAMPLE_APP, cwd=SAMPLE_DIR, env=env, settings=_empty_settings(tmp_path))

    message = str(failure.value)
    assert "exited with code 1" in message
    assert STORAGE_MESSAGE in message
    assert "tick (timerTrigger)" in message
    assert "unsupported_blob (blobTrigger)" in message  # skipped functions count too, as in Core Tools
    assert "greet (" not in message


def test_http_only_app_starts_without_azurewebjobsstorage(tmp_path: Path) -> None:
    env = {"AzureWebJobsStorage": ""}

    with HostProcess.start(
        app="http_only_app:app", cwd=SAMPLE_DIR, env=env, settings=_empty_settings(tmp_path)
    ) as proc:
        assert call("GET", f"{proc.url}/api/ping").body == b"pong"


@pytest.mark.parametrize(
    ("env", "values"),
    [
        # an empty variable is unset: the settings file's value fills it
        ({"AzureWebJobsStorage": ""}, {"AzureWebJobsStorage": "UseDevelopmentStorage=true"}),
        # identity-based connection settings
        ({"AzureWebJobsStorage": "", "AzureWebJobsStorage__accountName": "devstoreaccount1"}, {}),
    ],
    ids=["from-settings-file", "identity-based"],
)
def test_azurewebjobsstorage_from_the_settings_file_or_identity_settings_is_enough(
    tmp_path: Path, env: dict[str, str], values: dict[str, str]
) -> None:
    full_env = sample_env(tmp_path / "markers", **env)

    with HostProcess.start(
        app=SAMPLE_APP, cwd=SAMPLE_DIR, env=full_env, settings=_empty_settings(tmp_path, **values)
    ) as proc:
        assert call("GET", f"{proc.url}/api/items/1").status == 200


# -- timer schedule monitor (--state-dir) ----------------------------------------------------------

MONITOR_APP = "timer_monitor_app:app"
MISSED = {"last": "2020-01-01T00:00:00+00:00", "next": "2021-01-01T00:00:00+00:00"}


def _next_new_year() -> str:
    now = datetime.now(UTC)
    return datetime(now.year + 1, 1, 1, tzinfo=UTC).isoformat()


def _timer_states(state_dir: Path) -> dict[str, Any]:
    path = state_dir / "timers.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


def _start_monitor_host(markers: Path, state_dir: Path) -> HostProcess:
    return HostProcess.start(app=MONITOR_APP, cwd=SAMPLE_DIR, env=sample_env(markers), state_dir=state_dir)


def test_a_missed_occurrence_runs_once_at_startup_past_due_and_is_recorded(tmp_path: Path) -> None:
    markers, state_dir = tmp_path / "markers", tmp_path / "state"
    state_dir.mkdir()
    seeded = {name: MISSED for name in ("missed", "missed_on_startup", "unmonitored", "frequent")}
    (state_dir / "timers.json").write_text(json.dumps(seeded), encoding="utf-8")

    with _start_monitor_host(markers, state_dir) as proc:
        states = eventually(
            lambda: (
                all(
                    _timer_states(state_dir)[name]["last"] != MISSED["last"]
                    for name in ("missed", "missed_on_startup")
                )
                and _timer_states(state_dir)
            ),
            "both missed timers to run and be recorded",
            timeout=10,
        )
        # The host logs the catch-up before it runs it.
        past_due = "Executing 'Functions.missed' (Reason='Timer is past due on host startup'"
        output = eventually(proc.output, "the catch-up in the host's log", until=lambda out: past_due in out)
    # Leaving the block stopped the host, which joins its timer threads first: a second startup run of
    # either timer (run_on_startup besides the catch-up) would be in the markers by now.

    for name in ("missed", "missed_on_startup"):
        runs = records(markers, name)
        assert [run["past_due"] for run in runs] == [True], name
        assert runs[0]["status"]["Next"] == MISSED["next"], "the function sees the occurrence it missed"
        assert states[name]["next"] == _next_new_year()
        assert datetime.now(UTC) - datetime.fromisoformat(states[name]["last"]) < timedelta(minutes=1)
    assert records(markers, "unmonitored") == []  # use_monitor=False: no catch-up ...
    assert states["unmonitored"] == MISSED  # ... and nothing recorded
    assert all(run["past_due"] is False for run in records(markers, "frequent"))  # sub-minute: not monitored
    assert states["frequent"] == MISSED
    assert "Function 'missed' is past due on startup (its occurrence at 2021-01-01T00:00:00+00:00" in output
    assert past_due in output


def test_a_fresh_state_records_next_occurrences_and_a_restart_catches_nothing_up(tmp_path: Path) -> None:
    markers, state_dir = tmp_path / "markers", tmp_path / "state" / "devhost"  # created if missing

    with _start_monitor_host(markers, state_dir):
        first = eventually(
            lambda: (
                "missed" in (states := _timer_states(state_dir))
                and states.get("missed_on_startup", {}).get("last")
                and states
            ),
            "the first start to record the monitored timers and the run_on_startup run",
            timeout=10,
        )
    assert first["missed"] == {
        "last": None,
        "next": _next_new_year(),
        "lastUpdated": first["missed"]["lastUpdated"],
    }
    assert first["missed_on_startup"]["last"] is not None  # ran on startup, and that run was recorded
    assert "unmonitored" not in first
    assert "frequent" not in first

    with _start_monitor_host(markers, state_dir):
        eventually(
            lambda: len(records(markers, "missed_on_startup")) == 2, "run_on_startup on restart", timeout=10
        )
    # The host stopped and joined its timer threads: a catch-up run of "missed" would be recorded by now.

    assert records(markers, "missed") == []
    assert [run["past_due"] for run in records(markers, "missed_on_startup")] == [False, False]
    assert _timer_states(state_dir)["missed"] == first["missed"]


def test_without_state_dir_nothing_is_recorded_or_caught_up(tmp_path: Path) -> None:
    markers = tmp_path / "markers"

    with HostProcess.start(app=MONITOR_APP, cwd=SAMPLE_DIR, env=sample_env(markers)):
        eventually(lambda: records(markers, "missed_on_startup"), "run_on_startup", timeout=10)

    assert records(markers, "missed_on_startup")[0] == {"past_due": False, "status": {}}
    assert not (SAMPLE_DIR / "timers.json").exists()


def test_help_documents_the_state_dir_flag() -> None:
    result = _run_cli("--help")

    assert "--state-dir PATH" in result.stdout
    assert "past_due=True" in result.stdout
    assert "AzureWebJobsStorage" in result.stdout


# -- queue triggers against Azurite ----------------------------------------------------------------


@dataclass
class StorageHost:
    proc: HostProcess
    markers: Path
    connection_string: str
    queue: str
    failing_queue: str

    def client(self, queue: str, *, encode: bool = True) -> QueueClient:
        client = QueueClient.from_connection_string(
            self.connection_string,
            queue,
            api_version=QUEUE_API_VERSION,
            message_encode_policy=TextBase64EncodePolicy() if encode else None,
        )
        with suppress(ResourceExistsError):
            client.create_queue()
        return client


@pytest.fixture(scope="module")
def storage_host(azurite: AzuriteProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[StorageHost]:
    suffix = uuid.uuid4().hex[:8]
    markers = tmp_path_factory.mktemp("devhost-storage-markers")
    queue, failing = f"devhost-ok-{suffix}", f"devhost-fail-{suffix}"
    env = sample_env(
        markers,
        DEVHOST_STORAGE=azurite.connection_string,
        DEVHOST_QUEUE=queue,
        DEVHOST_FAILING_QUEUE=failing,
    )
    with HostProcess.start(app=SAMPLE_APP, cwd=SAMPLE_DIR, env=env) as proc:
        yield StorageHost(proc, markers, azurite.connection_string, queue, failing)


def _message_count(client: QueueClient) -> int:
    return int(client.get_queue_properties().approximate_message_count or 0)


def test_base64_queue_message_is_processed_and_deleted(storage_host: StorageHost) -> None:
    client = storage_host.client(storage_host.queue)

    client.send_message("rotate db-password")

    seen = eventually(
        lambda: records(storage_host.markers, "record_message"), "the queue function to run", timeout=10
    )
    assert seen[0]["body"] == "rotate db-password"
    assert seen[0]["dequeue_count"] == 1
    eventually(lambda: _message_count(client) == 0, "the processed message to be deleted", timeout=5)
    assert "Request URL" not in storage_host.proc.output(), (
        "the pollers' HTTP requests must not flood the log"
    )


def test_failing_message_moves_to_poison_after_five_dequeues(storage_host: StorageHost) -> None:
    client = storage_host.client(storage_host.failing_queue)
    poison = storage_host.client(f"{storage_host.failing_queue}-poison", encode=False)

    client.send_message("cannot be processed")

    moved = eventually(
        lambda: poison.peek_messages(max_messages=5), "the message in the poison queue", timeout=20
    )
    assert base64.b64decode(moved[0].content) == b"cannot be processed"
    attempts = records(storage_host.markers, "always_fails")
    assert [attempt["dequeue_count"] for attempt in attempts] == [1, 2, 3, 4, 5]
    assert all(attempt["body"] == "cannot be processed" for attempt in attempts)
    eventually(lambda: _message_count(client) == 0, "the original message to be deleted", timeout=5)


def test_message_that_is_not_base64_fails_and_ends_in_poison(storage_host: StorageHost) -> None:
    raw = storage_host.client(storage_host.queue, encode=False)
    poison = storage_host.client(f"{storage_host.queue}-poison", encode=False)

    raw.send_message("not base64 at all!")

    moved = eventually(
        lambda: poison.peek_messages(max_messages=5), "the undecodable message in poison", timeout=20
    )
    assert moved[0].content == "not base64 at all!"
    assert all(
        seen["body"] != "not base64 at all!" for seen in records(storage_host.markers, "record_message")
    )
    assert storage_host.proc.wait_for_output("is not valid base64")


def test_a_burst_of_256_new_connections_is_served_promptly(host: HostProcess) -> None:
    """Like Kestrel (backlog 512), not like the standard library's backlog of 5: its overflow drops
    handshakes, which the client retransmits a second or more later."""
    parts = urlsplit(host.url)
    assert parts.hostname is not None and parts.port is not None
    address = (parts.hostname, parts.port)
    start = threading.Barrier(256)
    took: list[float] = []

    def client() -> None:
        start.wait()
        began = time.monotonic()
        with socket.create_connection(address, timeout=30) as sock:
            sock.sendall(b"GET /admin/host/status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            if sock.recv(64).startswith(b"HTTP/1.1 200"):
                took.append(time.monotonic() - began)

    threads = [threading.Thread(target=client) for _ in range(256)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(took) == 256
    # A dropped handshake is retransmitted after 1 s at the earliest: none may have been.
    assert max(took) < 1.0, sorted(took)[-5:]
