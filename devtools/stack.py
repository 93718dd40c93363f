"""`make run`: the whole service on this machine, on its embedded defaults, until Ctrl-C.

Starts Azurite (Blob, Queue, Table) and the Key Vault emulator with state under ``.local/``, creates the
service's tables as the deployment does (infra/), seeds a few demo secrets that carry rotation policies
(one of them already due, made with the emulator's clock shifted back), then runs the app: under Azure
Functions Core Tools
(``func start``) when ``func`` is on PATH, else under the repo's dev host. Stops everything it started.

Run ``python -m devtools.stack --help`` for the options; the defaults are the well-known local ports
(Azurite 10000-10002, emulator 8443, app 7071) so ``UseDevelopmentStorage=true`` works as usual.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import signal
import socket
import sys
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from urllib.parse import urlsplit

from devtools.azurite import AzuriteProcess
from devtools.eventgrid_sink import EventGridSink
from devtools.keyvault_emulator.process import EmulatorProcess, set_clock_offset
from devtools.processes import ChildProcess, start
from shared.adapters.tables import AUDIT_INDEX_TABLE, AUDIT_TABLE, FINDINGS_TABLE, STATE_TABLE
from shared.config import vault_name
from shared.domain.identity import Role, encode_principal
from shared.domain.policy import RotationPolicy, SecretKind

REPO_ROOT = Path(__file__).resolve().parent.parent

#: Demo secrets of a fleet-dispatch platform: (name, policy, content type, expires in days or None).
DEMO_SECRETS: list[tuple[str, RotationPolicy, str, int | None]] = [
    (
        "dispatch-api-key",
        RotationPolicy(SecretKind.API_KEY, timedelta(days=30), None, "dispatch-api"),
        "text/plain",
        None,
    ),
    (
        "dispatch-db-password",
        RotationPolicy(SecretKind.DATABASE_PASSWORD, timedelta(days=60), timedelta(days=90), "dispatch-api"),
        "text/plain",
        90,
    ),
    (
        "driver-app-jwt-signing-key",
        RotationPolicy(SecretKind.JWT_SIGNING_KEY, timedelta(days=90), timedelta(days=120), "driver-app"),
        "application/octet-stream",
        12,  # near expiry on purpose: the expiry check has something to warn about
    ),
    (
        "telemetry-encryption-key",
        RotationPolicy(SecretKind.ENCRYPTION_KEY, timedelta(days=180), None, "telemetry"),
        "application/octet-stream",
        None,
    ),
]
#: An unmanaged demo secret near its expiry and never due (the service rotates only managed secrets): the
#: first expiry_check warns about it (its 30-day threshold).
UNMANAGED_DEMO_SECRET = "maps-provider-token"
UNMANAGED_DEMO_EXPIRES_DAYS = 20
#: A demo secret that is already due: made with the emulator's clock shifted back DUE_DEMO_AGE_DAYS, past
#: its 30-day interval, so the first rotation sweep (or the printed manual-rotation curl) rotates it.
DUE_DEMO_SECRET = "partner-webhook-api-key"
DUE_DEMO_POLICY = RotationPolicy(SecretKind.API_KEY, timedelta(days=30), None, "partner-gateway")
DUE_DEMO_AGE_DAYS = 45
#: The principal the printed curls send (honoured locally only): the roles of the endpoints they call.
DEMO_OPERATOR_ROLES = [Role.AUDIT_READ.value, Role.ROTATION_OPERATE.value]

#: The tables infra/ declares with the storage account: a deployment has them before the app serves (the
#: health check reports a missing audit table), so a local run and the tests create them the same way.
SERVICE_TABLES = (AUDIT_TABLE, AUDIT_INDEX_TABLE, FINDINGS_TABLE, STATE_TABLE)


def _say(message: str) -> None:
    print(f"[make run] {message}", flush=True)


def _port_free(host: str, port: int) -> bool:
    if port == 0:
        return True
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As the servers themselves do: connections of a run stopped a moment ago (TIME_WAIT) must not
        # count as "in use"; a real listener still does.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def seed_demo_secrets(vault_url: str, ca_bundle: Path) -> list[str]:
    """Create the demo secrets that do not exist yet. Returns the names created. Values are random and
    never printed: consumers read them from the vault, like in Azure. ``vault_url`` is the Key Vault
    emulator: the due demo secret is made with its clock shifted back (``/_emulator/clock``), then reset."""
    from azure.core.exceptions import ResourceNotFoundError
    from azure.keyvault.secrets import SecretClient

    from shared.adapters.key_vault import LocalTokenCredential

    client = SecretClient(
        vault_url, LocalTokenCredential(), verify_challenge_resource=False, connection_verify=str(ca_bundle)
    )
    created: list[str] = []
    now = datetime.now(UTC)
    demo = [(n, p.to_tags(), ct, exp, 0) for n, p, ct, exp in DEMO_SECRETS]
    demo.append((UNMANAGED_DEMO_SECRET, {"owner": "maps"}, "text/plain", UNMANAGED_DEMO_EXPIRES_DAYS, 0))
    demo.append((DUE_DEMO_SECRET, DUE_DEMO_POLICY.to_tags(), "text/plain", None, DUE_DEMO_AGE_DAYS))
    for name, tags, content_type, expires_days, age_days in demo:
        try:
            client.get_secret(name)
            continue
        except ResourceNotFoundError:
            pass
        if age_days:
            set_clock_offset(vault_url, ca_bundle, -age_days * 86400)
        try:
            client.set_secret(
                name,
                secrets.token_urlsafe(32),
                tags=tags,
                content_type=content_type,
                expires_on=None if expires_days is None else now + timedelta(days=expires_days),
            )
        finally:
            if age_days:
                set_clock_offset(vault_url, ca_bundle, 0)
        created.append(name)
    return created


def create_tables(connection_string: str) -> list[str]:
    """Create the service's tables that do not exist yet, and the audit archive's container, as the
    deployment does. Returns the tables created. Raises RuntimeError when the storage cannot do it."""
    from azure.core.exceptions import AzureError, ResourceExistsError
    from azure.data.tables import TableServiceClient
    from azure.storage.blob import BlobServiceClient

    from shared.adapters.archive import BLOB_API_VERSION

    blobs = BlobServiceClient.from_connection_string(connection_string, api_version=BLOB_API_VERSION)
    try:
        blobs.create_container("auditarchive")  # AUDIT_ARCHIVE_CONTAINER's default
    except ResourceExistsError:
        pass
    except AzureError as err:
        raise RuntimeError(f"could not create the audit archive container: {err}") from err

    service = TableServiceClient.from_connection_string(connection_string)
    created: list[str] = []
    for name in SERVICE_TABLES:
        try:
            service.create_table(name)
        except ResourceExistsError:
            continue
        except AzureError as err:
            raise RuntimeError(f"could not create table {name}: {type(err).__name__}: {err}") from err
        created.append(name)
    return created


def app_environment(
    azurite: AzuriteProcess, emulator: EmulatorProcess, sink: EventGridSink
) -> dict[str, str]:
    """The settings the app gets, from the peers' real ports (they override local.settings.json)."""
    return {
        "EVENT_GRID_TOPIC_ENDPOINT": sink.endpoint,
        "EVENT_GRID_TOPIC_KEY": sink.key or "",
        "AzureWebJobsStorage": azurite.connection_string,
        "SECRETS_STORAGE": azurite.connection_string,
        "KEY_VAULT_URL": emulator.url,
        "KEY_VAULT_CA_BUNDLE": str(emulator.cert_file),
        "ALLOW_UNVERIFIED_PRINCIPAL": "true",
        "AZURE_FUNCTIONS_ENVIRONMENT": "Development",
        "FUNCTIONS_WORKER_RUNTIME": "python",
    }


def ensure_local_settings(target: Path) -> None:
    """Core Tools needs local.settings.json; create it from the sample the first time (it is git-ignored)."""
    if not target.exists():
        shutil.copyfile(REPO_ROOT / "local.settings.sample.json", target)
        _say(f"created {target.name} from local.settings.sample.json")


def write_local_settings(target: Path, env: dict[str, str], app_port: int | None = None) -> None:
    """Put the peers' settings (their real ports, ``env``) into ``target``'s Values, for a ``func start``
    run by hand next to them, and the app's port (``app_port``) into ``Host.LocalHttpPort``, where Core
    Tools and the operator CLI read it; every other value in it stays (created from the sample when
    missing). Written whole or not at all."""
    import json

    ensure_local_settings(target)
    try:
        document = json.loads(target.read_text())
        values = document["Values"]
    except (ValueError, KeyError, TypeError) as err:
        raise RuntimeError(
            f"{target} is not a local.settings.json with Values ({err}): fix or delete it"
        ) from err
    values.update(env)
    if app_port is not None:
        host = document.get("Host")
        document["Host"] = {**(host if isinstance(host, dict) else {}), "LocalHttpPort": app_port}
    partial = target.with_suffix(target.suffix + ".tmp")
    partial.write_text(json.dumps(document, indent=2) + "\n")
    partial.replace(target)
    _say(f"wrote the peers' settings into {target.name}: {', '.join(sorted(env))}")


def start_app(
    port: int, env: dict[str, str], use_func: bool, settings_file: Path, state_dir: Path, timeout: float = 120
) -> tuple[ChildProcess, int]:
    """Start the app, its output on our terminal, and wait until GET /api/health answers. Returns the app and
    the status it answered. Raises RuntimeError when it exits or does not answer within ``timeout``."""
    child_env = {**os.environ, **env}
    if use_func:
        func_path = shutil.which("func")
        assert func_path is not None
        # Core Tools starts its Python worker with the first python3 on PATH: make that this venv's, or the
        # worker imports function_app without the project's packages and the host has no functions.
        venv_bin = str(Path(sys.executable).parent)
        child_env["PATH"] = os.pathsep.join([venv_bin, child_env.get("PATH", "")])
        child_env["VIRTUAL_ENV"] = sys.prefix
        child_env["languageWorkers__python__defaultExecutablePath"] = sys.executable
        _say(f"starting the app under Azure Functions Core Tools ({func_path}) on port {port}")
        args = [func_path, "start", "--port", str(port)]
    else:
        _say(f"Core Tools (func) not found: starting the app under the dev host on port {port}")
        args = [sys.executable, "-m", "devtools.host", "--port", str(port), "--settings", str(settings_file),
                "--state-dir", str(state_dir / "devhost")]  # fmt: skip
    return start(
        "the app",
        args,
        cwd=REPO_ROOT,
        env=child_env,
        output="inherit",
        ready=lambda: health_status(f"http://127.0.0.1:{port}/api/health"),
        poll_interval=0.3,
        timeout=timeout,
        new_session=False,
        stop_signal=signal.SIGINT,
        stop_timeout=15.0,
    )


def health_status(url: str) -> int | None:
    """GET /api/health once: the status it answered (any), or None when nothing answers yet."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=15) as response:  # noqa: S310 - loopback URL we built
            return int(response.status)
    except urllib.error.HTTPError as err:
        return err.code
    except (urllib.error.URLError, OSError):
        return None


def _peers_banner(
    azurite: AzuriteProcess, emulator: EmulatorProcess, sink: EventGridSink, settings: Path
) -> str:
    storage = f"blob {azurite.blob_port}, queue {azurite.queue_port}, table {azurite.table_port}"
    return (
        "\n"
        f"  Key Vault    {emulator.url}  (emulator; CA: {emulator.cert_file})\n"
        f"  Storage      Azurite {storage}\n"
        f"  Events       {sink.endpoint.replace('/api/events', '/_sink/events')}  (notifications sent)\n"
        f"  Settings     {settings} (their real ports)\n"
        "  Now, in another terminal: source .venv/bin/activate && func start\n"
        "  Stop:        Ctrl-C\n"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devtools.stack",
        description="Run the secret lifecycle service locally: Azurite + Key Vault emulator + the app "
        "(func start when Core Tools is installed, else the dev host). Development only.",
    )
    parser.add_argument("--port", type=int, default=7071, help="app port (default 7071)")
    parser.add_argument("--vault-port", type=int, default=8443, help="Key Vault emulator port (default 8443)")
    parser.add_argument(
        "--storage-ports",
        default="10000,10001,10002",
        help="Azurite blob,queue,table ports (default 10000,10001,10002)",
    )
    parser.add_argument(
        "--state-dir", type=Path, default=REPO_ROOT / ".local", help="peer state (default .local/)"
    )
    parser.add_argument(
        "--dev-host", action="store_true", help="use the dev host even when func is installed"
    )
    parser.add_argument(
        "--events-port", type=int, default=8790, help="local Event Grid topic endpoint port (default 8790)"
    )
    parser.add_argument(
        "--settings",
        type=Path,
        default=REPO_ROOT / "local.settings.json",
        help="settings file for the app, created from local.settings.sample.json when missing "
        "(default local.settings.json; Core Tools always reads local.settings.json)",
    )
    parser.add_argument("--no-seed", action="store_true", help="do not create the demo secrets")
    parser.add_argument(
        "--peers-only",
        action="store_true",
        help="start only the peers and write their settings into --settings, for `func start` run by hand",
    )
    args = parser.parse_args(argv)

    try:
        blob, queue, table = (int(p) for p in args.storage_ports.split(","))
    except ValueError:
        parser.error("--storage-ports takes three comma-separated port numbers, e.g. 10000,10001,10002")
    wanted = {
        "app": args.port,
        "Key Vault emulator": args.vault_port,
        "Event Grid sink": args.events_port,
        "Azurite blob": blob,
        "Azurite queue": queue,
        "Azurite table": table,
    }
    if args.peers_only:
        del wanted["app"]
    for what, port in wanted.items():
        if not _port_free("127.0.0.1", port):
            _say(f"port {port} for the {what} is already in use: stop what runs there, or pick another port "
                 "(python -m devtools.stack --help)")  # fmt: skip
            return 2

    if args.port == 0:
        args.port = _free_port()
    state_dir: Path = args.state_dir
    state_dir.mkdir(parents=True, exist_ok=True)
    cleanups: list[Callable[[], object]] = []
    stopping = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    app: ChildProcess | None = None
    try:
        _say("starting Azurite (Blob, Queue, Table)")
        azurite = AzuriteProcess.start(
            state_dir / "azurite", blob_port=blob, queue_port=queue, table_port=table
        )
        cleanups.append(azurite.stop)
        created_tables = create_tables(azurite.connection_string)
        _say(f"tables: {', '.join(created_tables) if created_tables else 'already present'}")
        _say("starting the Key Vault emulator")
        emulator = EmulatorProcess.start(
            state_dir / "keyvault-emulator.pem",
            port=args.vault_port,
            state_file=state_dir / "keyvault-state.json",
            purge_protection=True,  # like the vault infra/ deploys
        )
        cleanups.append(emulator.stop)
        created: list[str] = []
        if not args.no_seed:
            created = seed_demo_secrets(emulator.url, emulator.cert_file)
            _say(f"demo secrets: {', '.join(created) if created else 'already present'}")
        sink = EventGridSink(key="local-topic-key", port=args.events_port).start()
        cleanups.append(sink.stop)
        env = app_environment(azurite, emulator, sink)
        if args.peers_only:
            write_local_settings(args.settings, env)
            print(_peers_banner(azurite, emulator, sink, args.settings), flush=True)
            stopping.wait()
            return 0
        # The ports in use, for the app and for the tools (devtools.local, the CLIs' --settings).
        write_local_settings(args.settings, env, app_port=args.port)
        use_func = shutil.which("func") is not None and not args.dev_host
        app, status = start_app(args.port, env, use_func, args.settings, state_dir)
        base = f"http://127.0.0.1:{args.port}"
        # The tools read the settings file (the operator CLI finds the app's port there: Host.LocalHttpPort).
        default = args.settings == REPO_ROOT / "local.settings.json"
        settings = "" if default else f" --settings {args.settings}"
        local = f".venv/bin/python -m devtools.local{settings}"
        local_url = "" if args.port == 7071 else f" --url {base}"
        cli = f".venv/bin/secret-lifecycle{settings}"
        revoke = (f"revocations request {DUE_DEMO_SECRET} --reason COMPROMISE_SUSPECTED --severity high "
                  "--justification 'seen in a public paste'")  # fmt: skip
        parts = urlsplit(emulator.url)
        vault = vault_name(parts.hostname or "127.0.0.1", parts.port)
        operator = encode_principal("local-operator", DEMO_OPERATOR_ROLES)  # honoured locally only
        header = f"-H 'x-ms-client-principal: {operator}'"
        rotate = f"-X POST {header} -H 'Content-Type: application/json' -d '{{\"force\": true}}'"
        due_note = (
            f"({DUE_DEMO_SECRET} is due: made {DUE_DEMO_AGE_DAYS} days ago on the emulator's clock, past its "
            "30-day interval; the hourly rotation_sweep rotates it)"
            if DUE_DEMO_SECRET in created
            else '("force": rotate now, due or not)'
        )
        print(
            "\n"
            f"  Service      {base}/api/health  (answered {status})\n"
            f"  Key Vault    {emulator.url}  (emulator; CA: {emulator.cert_file})\n"
            f"  Storage      Azurite blob {azurite.blob_port}, queue {azurite.queue_port}, "
            f"table {azurite.table_port}\n"
            f"  Events       {sink.endpoint.replace('/api/events', '/_sink/events')}  (notifications sent)\n"
            f"  Try:         curl -s {base}/api/health\n"
            f"               curl -s {header} '{base}/api/audit/verify'\n"
            f"               curl -s {header} '{base}/api/rotation/plan?within_days=30'\n"
            f"               curl -s {rotate} '{base}/api/secrets/{DUE_DEMO_SECRET}/rotate'\n"
            f"               {due_note}\n"
            f"               curl -s -X POST -H 'Content-Type: application/json' -d '{{\"input\": \"\"}}' "
            f"'{base}/admin/functions/expiry_check'\n"
            "               (the daily expiry check, now: it warns about what expires soon, "
            f"{UNMANAGED_DEMO_SECRET} among them)\n"
            f"  By hand:     {local} event SecretNearExpiry {UNMANAGED_DEMO_SECRET}{local_url}\n"
            f"               (Key Vault's event for it, from vault {vault}: devtools/events/)\n"
            f"               {local} secret my-partner-token --expires-in 10  (a chosen expiry)\n"
            f"  CLI:         {cli} plan --within 30d\n"
            f"               {cli} rotate {DUE_DEMO_SECRET} --force --wait\n"
            f"               {cli} {revoke}\n"
            f"               {cli} --as second-operator revocations approve <id>  (four eyes)\n"
            f"               {cli} revocations execute <id>\n"
            f"               {cli} audit tail --follow  (docs/cli.md: every command)\n"
            f"  Settings:    {args.settings} (the ports above; the tools read it)\n"
            "  Stop:        Ctrl-C\n",
            flush=True,
        )
        while not stopping.is_set() and app.returncode is None:
            stopping.wait(0.5)
        if app.returncode is not None and not stopping.is_set():
            _say(f"the app exited with code {app.returncode}")
            return app.returncode or 1
        return 0
    except RuntimeError as err:
        _say(str(err))
        return 1
    finally:
        _say("stopping")
        if app is not None:
            app.stop()
        for cleanup in reversed(cleanups):
            cleanup()
        _say("stopped")


if __name__ == "__main__":
    sys.exit(main())
