"""``python -m devtools.host``: start the dev host, print the function list and a ready line, run until
SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from devtools.host import ncrontab
from devtools.host.functions import (
    EVENT_GRID,
    HTTP,
    QUEUE,
    TIMER,
    FunctionInfo,
    Invoker,
    SettingError,
    app_directory,
    index_functions,
    load_app,
    resolve_setting_references,
)
from devtools.host.routes import Route, RouteError, RouteTable, compile_route
from devtools.host.schedule_monitor import TimerStateStore
from devtools.host.server import DevHostServer, Dispatch
from devtools.host.settings import HostConfig, SettingsFileError, load_host_json, load_local_settings
from devtools.host.triggers import QueuePoller, TimerRunner, queue_client_factory

__all__ = ["StartupError", "build_parser", "main"]

logger = logging.getLogger("devtools.host")

DESCRIPTION = """\
Development-only local host for an Azure Functions (Python v2) app, standing in for Core Tools' `func start`
where Core Tools cannot be installed. Not for production.

Serves HTTP triggers at http://HOST:PORT/<routePrefix>/<route> (no function for the method and route: 404;
a function that raises: 500 with an empty body, traceback in the log), runs timer triggers on their
NCRONTAB schedules (UTC), polls queue triggers, accepts Event Grid deliveries at
/runtime/webhooks/eventgrid?functionName=NAME and runs any non-HTTP function now with
POST /admin/functions/NAME {"input": "..."}. Other triggers and bindings are skipped with a warning.

App settings come from the environment and from the settings file's "Values": a variable already set wins,
unless it is empty. As under Core Tools, AZURE_FUNCTIONS_ENVIRONMENT is Development whatever the settings
file says (only the real environment can set another value), and the host refuses to start when a function
has a trigger other than HTTP (timer, queue, Event Grid, ...) and AzureWebJobsStorage is missing or empty.

Timer schedule monitor: with --state-dir, each monitored timer's last and next occurrence are kept in
PATH/timers.json, and a timer whose occurrence was missed while the host was down runs once at startup
with past_due=True (instead of run_on_startup), as the runtime does with AzureWebJobsStorage. Timers with
use_monitor=False and schedules firing more often than once a minute are not monitored. Without
--state-dir nothing is kept and missed occurrences are not caught up.

HTTP requests are held to the limits of Kestrel, the server in Core Tools: a request line over 8 KB is 414,
headers over 32 KB in all or more than 100 are 431, a body over 100 MB is 413, an unparsable request is 400,
each with Connection: close. As App Service's front end does in Azure, the caller's address (ip:port) is
appended to X-Forwarded-For as the last hop, after any hops the client sent.

Security: it binds loopback addresses only and does NOT enforce function keys: auth_level FUNCTION/ADMIN is
not enforced locally.
"""

ENVIRONMENT_SETTING = "AZURE_FUNCTIONS_ENVIRONMENT"
STORAGE_SETTING = "AzureWebJobsStorage"
# Core Tools' Constants.TriggersWithoutStorage, in its spelling (it compares them case-insensitively).
TRIGGERS_WITHOUT_STORAGE = (
    "httptrigger",
    "kafkatrigger",
    "rabbitmqtrigger",
    "orchestrationTrigger",
    "activityTrigger",
    "entityTrigger",
)

_LOOPBACK_NAMES = {"localhost": "127.0.0.1"}


class StartupError(Exception):
    """The host cannot start; the message is printed as is."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m devtools.host",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--port", type=int, default=7071, help="TCP port; 0 picks a free one (default 7071)")
    parser.add_argument("--host", default="127.0.0.1", help="loopback address to bind (default 127.0.0.1)")
    parser.add_argument(
        "--app",
        default="function_app:app",
        help="module:attribute of the FunctionApp (default function_app:app)",
    )
    parser.add_argument(
        "--settings",
        default=None,
        help="settings file whose Values become app settings (default local.settings.json, if present)",
    )
    parser.add_argument(
        "--state-dir",
        metavar="PATH",
        default=None,
        help="keep the timer schedule monitor's state in PATH/timers.json (created if missing) and run "
        "timers that missed an occurrence while the host was down once at startup, with past_due=True "
        "(default: no state, no catch-up)",
    )
    return parser


def loopback_host(host: str) -> str:
    """The address to bind, or StartupError when ``host`` is not a loopback address."""
    address = _LOOPBACK_NAMES.get(host.lower(), host).strip("[]")
    try:
        is_loopback = ipaddress.ip_address(address).is_loopback
    except ValueError:
        is_loopback = False
    if not is_loopback:
        raise StartupError(
            f"refusing to bind {host!r}: the dev host is a development tool that does not enforce "
            "function keys and binds loopback addresses only (127.0.0.1, ::1, localhost)"
        )
    return address


@dataclass
class _Plan:
    """Everything the host runs, decided before anything starts."""

    functions: list[FunctionInfo]
    routes: list[Route] = field(default_factory=list)
    timers: list[tuple[FunctionInfo, ncrontab.Schedule]] = field(default_factory=list)
    queues: list[tuple[FunctionInfo, str | None, str]] = field(default_factory=list)


def _plan(functions: list[FunctionInfo]) -> _Plan:
    """Compile routes and schedules; raise StartupError naming the function for a bad one."""
    plan = _Plan(functions)
    for function in functions:
        trigger = function.trigger
        if function.trigger_type == HTTP:
            try:
                route = compile_route(
                    function.name, str(trigger.get("route") or function.name), trigger.get("methods") or ()
                )
            except RouteError as err:
                raise StartupError(f"HTTP function '{function.name}': {err}") from err
            plan.routes.append(route)
        elif function.trigger_type == TIMER:
            expression = str(trigger.get("schedule") or "")
            try:
                schedule = ncrontab.parse(resolve_setting_references(expression))
            except (ncrontab.ScheduleError, SettingError) as err:
                raise StartupError(
                    f"timer function '{function.name}' has an invalid schedule: {err}"
                ) from err
            plan.timers.append((function, schedule))
        elif function.trigger_type == QUEUE:
            connection = str(trigger.get("connection") or "")
            try:
                queue_name: str | None = resolve_setting_references(str(trigger.get("queueName") or ""))
            except SettingError as err:
                logger.error(
                    "Queue function '%s' will not be polled: its queue name needs %s", function.name, err
                )
                queue_name = None
            plan.queues.append((function, queue_name, connection))
    return plan


def _describe(plan: _Plan, base_url: str, prefix: str) -> list[str]:
    lines: list[str] = []
    routes = {route.function_name: route for route in plan.routes}
    schedules = {function.name: schedule for function, schedule in plan.timers}
    queues = {function.name: (queue, connection) for function, queue, connection in plan.queues}
    for function in plan.functions:
        if function.trigger_type == HTTP:
            route = routes[function.name]
            methods = ",".join(sorted(route.methods)) if route.methods else "ALL"
            path = "/".join(part for part in (prefix, route.template.strip("/")) if part)
            lines.append(f"{function.name}: [{methods}] {base_url}/{path}")
        elif function.trigger_type == TIMER:
            lines.append(f"{function.name}: timerTrigger ({schedules[function.name].expression})")
        elif function.trigger_type == QUEUE:
            queue, connection = queues[function.name]
            storage = connection or "AzureWebJobsStorage"
            lines.append(f"{function.name}: queueTrigger (queue {queue or '?'} on {storage})")
        elif function.trigger_type == EVENT_GRID:
            webhook = f"{base_url}/runtime/webhooks/eventgrid?functionName={function.name}"
            lines.append(f"{function.name}: eventGridTrigger (POST {webhook})")
    return lines


def _configure_logging() -> None:
    handler = logging.StreamHandler(sys.stderr)
    formatter = logging.Formatter(
        "[%(asctime)s.%(msecs)03dZ] %(levelname)s %(name)s: %(message)s", "%Y-%m-%dT%H:%M:%S"
    )
    formatter.converter = time.gmtime
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)


def _load_settings(settings_arg: str | None) -> Path:
    """Apply the settings file to the environment; return its path (it may not exist)."""
    path = Path(settings_arg or "local.settings.json")
    environment = os.environ.get(ENVIRONMENT_SETTING, "")
    applied, warnings = load_local_settings(path, required=settings_arg is not None)
    for warning in warnings:
        logger.warning("%s", warning)
    if applied:
        logger.info("Loaded %d app setting(s) from %s", len(applied), path)
    if not environment:
        # Core Tools runs the app as Development whatever local.settings.json says.
        from_file = os.environ.get(ENVIRONMENT_SETTING, "")
        if from_file and from_file.lower() != "development":
            logger.warning(
                "%s sets %s to %r, but Core Tools always runs the app as Development: using Development "
                "(set the variable in the environment to run as something else)",
                path.name,
                ENVIRONMENT_SETTING,
                from_file,
            )
        os.environ[ENVIRONMENT_SETTING] = "Development"
    worker_runtime = os.environ.get("FUNCTIONS_WORKER_RUNTIME")
    if worker_runtime and worker_runtime.lower() != "python":
        logger.warning("FUNCTIONS_WORKER_RUNTIME is %r; this dev host runs Python apps only", worker_runtime)
    return path


def _check_storage(trigger_types: dict[str, str], settings_file: Path) -> None:
    """Refuse to start, like Core Tools, when a function needs AzureWebJobsStorage and it is not set.

    A connection string, or identity-based settings (``AzureWebJobsStorage__accountName`` etc.), will do.
    """
    without = {name.lower() for name in TRIGGERS_WITHOUT_STORAGE}
    needing = sorted(
        f"{name} ({kind})" for name, kind in trigger_types.items() if kind and kind.lower() not in without
    )
    if not needing:
        return
    prefix = f"{STORAGE_SETTING.lower()}__"
    configured = any(
        value.strip() and (key.lower() == STORAGE_SETTING.lower() or key.lower().startswith(prefix))
        for key, value in os.environ.items()
    )
    if not configured:
        raise StartupError(
            f"Missing value for {STORAGE_SETTING} in {settings_file.name}. This is required for all "
            f"triggers other than {', '.join(TRIGGERS_WITHOUT_STORAGE)}. "
            f"Function(s) that need it: {', '.join(needing)}."
        )


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        bind_host = loopback_host(args.host)
    except StartupError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    _configure_logging()
    try:
        return _run(args, bind_host)
    except StartupError as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        return 1


def _run(args: argparse.Namespace, bind_host: str) -> int:
    try:
        settings_file = _load_settings(args.settings)
        config = load_host_json(Path("host.json"))
    except SettingsFileError as err:
        raise StartupError(str(err)) from err
    if not Path("host.json").is_file():
        logger.warning("No host.json in %s; using the runtime defaults", os.getcwd())
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        app = load_app(args.app)
    except Exception as err:
        logger.exception("Cannot load the function app %r", args.app)
        raise StartupError(f"cannot load the function app {args.app!r}: {type(err).__name__}: {err}") from err
    try:
        index = index_functions(app, app_directory(args.app))
    except ValueError as err:  # what the library raises for duplicate names or a function without trigger
        raise StartupError(f"cannot index the functions of {args.app!r}: {err}") from err
    _check_storage(index.trigger_types, settings_file)
    functions = index.functions
    for warning in index.skipped:
        logger.warning("The dev host does not support this function: %s", warning)
    plan = _plan(functions)
    state = _state_store(args.state_dir)

    stop = threading.Event()
    invoker = Invoker()
    dispatch = Dispatch(
        functions={function.name.lower(): function for function in functions},
        routes=RouteTable(plan.routes),
        route_prefix=config.route_prefix,
        invoker=invoker,
    )
    try:
        server = DevHostServer(bind_host, args.port, dispatch)
    except OSError as err:
        raise StartupError(f"cannot listen on {bind_host}:{args.port}: {err}") from err
    _install_signal_handlers(stop)
    http_thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.2}, name="devhost-http"
    )
    http_thread.daemon = True
    http_thread.start()

    runners = _start_triggers(plan, invoker, config, stop, state)
    listing = "".join(f"        {line}\n" for line in _describe(plan, server.base_url, config.route_prefix))
    _say(
        f"\nFunctions:\n\n{listing}\n"
        "Note: development use only. auth_level FUNCTION/ADMIN is not enforced locally (no function keys).\n"
        f"Host started. dev host ready on {server.base_url}\n"
    )

    while not stop.wait(0.5):
        pass
    logger.info("Stopping the dev host")
    server.shutdown()
    server.server_close()
    deadline = time.monotonic() + 2.5
    for runner in runners:
        runner.join(max(0.0, deadline - time.monotonic()))
    invoker.close()
    _exit_soon()
    return 0


def _state_store(state_dir: str | None) -> TimerStateStore | None:
    if state_dir is None:
        return None
    directory = Path(state_dir).resolve()
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise StartupError(f"cannot use --state-dir {state_dir!r}: {err}") from err
    return TimerStateStore(directory)


def _start_triggers(
    plan: _Plan,
    invoker: Invoker,
    config: HostConfig,
    stop: threading.Event,
    state: TimerStateStore | None,
) -> list[TimerRunner | QueuePoller]:
    timers = [TimerRunner(function, schedule, invoker, stop, state) for function, schedule in plan.timers]
    if state is not None:
        monitored = [timer.function.name for timer in timers if timer.monitoring]
        logger.info(
            "Timer schedule monitor keeps its state in %s (monitored: %s)",
            state.path,
            ", ".join(monitored) or "none",
        )
    runners: list[TimerRunner | QueuePoller] = [*timers]
    for function, queue_name, connection in plan.queues:
        if queue_name is None:
            continue
        try:
            factory = queue_client_factory(connection)
            runners.append(QueuePoller(function, queue_name, factory, invoker, config, stop))
        except (LookupError, ValueError) as err:
            logger.error("Queue function '%s' will not be polled: %s", function.name, err)
    for runner in runners:
        runner.start()
    return runners


def _say(text: str) -> None:
    # One write per message, so a launcher reading our output never sees the ready line split.
    sys.stdout.write(text)
    sys.stdout.flush()


def _install_signal_handlers(stop: threading.Event) -> None:
    def handle(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, handle)
    signal.signal(signal.SIGTERM, handle)


def _exit_soon() -> None:
    """Make sure the process ends even if the app left non-daemon threads behind."""

    def force() -> None:
        time.sleep(3)
        os._exit(0)

    threading.Thread(target=force, name="devhost-exit", daemon=True).start()
