"""Load a Functions app, index its functions once, and invoke them the way the Python worker does.

The worker passes each trigger/binding value by the parameter whose name is the binding's ``name``, and a
``func.Context`` to a parameter called ``context``. ``async def`` functions run on one shared event loop
(as in the worker); plain functions run on the calling thread.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import json
import logging
import os
import re
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import azure.functions as func
from azure.functions import _abc as azf_abc

__all__ = [
    "EVENT_GRID",
    "HTTP",
    "QUEUE",
    "TIMER",
    "FunctionIndex",
    "FunctionInfo",
    "Invoker",
    "SettingError",
    "index_functions",
    "load_app",
    "resolve_setting_references",
]

logger = logging.getLogger("devtools.host")

HTTP = "httpTrigger"
TIMER = "timerTrigger"
QUEUE = "queueTrigger"
EVENT_GRID = "eventGridTrigger"
SUPPORTED_TRIGGERS = (HTTP, TIMER, QUEUE, EVENT_GRID)

_SETTING_REFERENCE = re.compile(r"%([^%\s]+)%")


class SettingError(LookupError):
    """A binding refers to an app setting (``%NAME%``) that is not set."""


@dataclass(frozen=True)
class FunctionInfo:
    """One indexed function: its name, trigger binding (function.json form) and the user's callable."""

    name: str
    trigger: dict[str, Any]
    user_function: Callable[..., Any] = field(repr=False)
    directory: str

    @property
    def trigger_type(self) -> str:
        return str(self.trigger.get("type", ""))

    @property
    def trigger_name(self) -> str:
        return str(self.trigger.get("name", ""))


def load_app(spec: str) -> Any:
    """Import ``module:attribute`` (attribute defaults to ``app``) and check it is a FunctionApp.

    Raises ValueError for a malformed spec or an object that is not a function app; import errors propagate.
    """
    module_name, _, attribute = spec.partition(":")
    if not module_name:
        raise ValueError(f"--app {spec!r}: expected 'module:attribute', e.g. 'function_app:app'")
    module = importlib.import_module(module_name)
    app = getattr(module, attribute or "app", None)
    if app is None:
        raise ValueError(f"--app {spec!r}: module {module_name!r} has no attribute {attribute or 'app'!r}")
    if not callable(getattr(app, "get_functions", None)):
        raise ValueError(f"--app {spec!r} is a {type(app).__name__}, not an azure.functions.FunctionApp")
    return app


@dataclass(frozen=True)
class FunctionIndex:
    """What indexing found: the functions the dev host runs, one warning per function it skips, and the
    trigger type of every function, skipped ones included ("" when it has none)."""

    functions: list[FunctionInfo]
    skipped: list[str]
    trigger_types: dict[str, str]


def index_functions(app: Any, directory: str) -> FunctionIndex:
    """Index the app's functions.

    Calls ``app.get_functions()`` exactly once: the library refuses a second call on the same app.
    """
    supported: list[FunctionInfo] = []
    skipped: list[str] = []
    trigger_types: dict[str, str] = {}
    for function in app.get_functions():
        name = str(function.get_function_name())
        # function.json form: plain strings instead of the library's enums, camelCase keys.
        bindings: list[dict[str, Any]] = json.loads(function.get_function_json())["bindings"]
        trigger = next((b for b in bindings if str(b.get("type", "")).endswith("Trigger")), None)
        trigger_types[name] = str(trigger.get("type", "")) if trigger is not None else ""
        if trigger is None:
            skipped.append(f"{name}: no trigger binding; skipped")
            continue
        if trigger["type"] not in SUPPORTED_TRIGGERS:
            skipped.append(f"{name}: {trigger['type']} is not supported by the dev host; skipped")
            continue
        others = [b for b in bindings if b is not trigger and not _is_http_return(trigger, b)]
        if others:
            kinds = ", ".join(f"{b.get('type')} '{b.get('name')}'" for b in others)
            skipped.append(f"{name}: bindings other than the trigger ({kinds}) are not supported; skipped")
            continue
        info = FunctionInfo(name, trigger, function.get_user_function(), directory)
        unbound = _unbound_parameters(info)
        if unbound:
            skipped.append(
                f"{name}: parameter(s) {', '.join(unbound)} match no binding "
                f"(the trigger binding is named {info.trigger_name!r}); skipped"
            )
            continue
        supported.append(info)
    return FunctionIndex(supported, skipped, trigger_types)


def _unbound_parameters(function: FunctionInfo) -> list[str]:
    """Required parameters the worker could not fill: neither the trigger's name nor ``context``."""
    return [
        name
        for name, parameter in inspect.signature(function.user_function).parameters.items()
        if name not in (function.trigger_name, "context")
        and parameter.default is inspect.Parameter.empty
        and parameter.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    ]


def _is_http_return(trigger: Mapping[str, Any], binding: Mapping[str, Any]) -> bool:
    return trigger["type"] == HTTP and binding.get("type") == "http" and binding.get("name") == "$return"


def resolve_setting_references(value: str, environ: Mapping[str, str] | None = None) -> str:
    """Replace ``%NAME%`` with the app setting NAME, as the runtime does in binding properties.

    Raises SettingError naming the missing setting.
    """
    env = os.environ if environ is None else environ

    def lookup(match: re.Match[str]) -> str:
        setting = match.group(1)
        if setting not in env:
            raise SettingError(f"app setting {setting!r} (referenced as %{setting}%) is not set")
        return env[setting]

    return _SETTING_REFERENCE.sub(lookup, value)


class _TraceContext(azf_abc.TraceContext):
    @property
    def trace_state(self) -> str:
        return ""

    @property
    def trace_parent(self) -> str:
        return ""

    @property
    def attributes(self) -> dict[str, str]:
        return {}


class _RetryContext(azf_abc.RetryContext):
    @property
    def retry_count(self) -> int:
        return 0

    @property
    def max_retry_count(self) -> int:
        return 0

    @property
    def exception(self) -> azf_abc.RpcException:
        raise AttributeError("no retry policy is applied by the dev host")


class InvocationContext(func.Context):
    """The ``context`` argument: a fresh invocation id per call."""

    def __init__(self, invocation_id: str, function_name: str, function_directory: str) -> None:
        self._invocation_id = invocation_id
        self._function_name = function_name
        self._function_directory = function_directory
        self._thread_local = threading.local()
        self._thread_local.invocation_id = invocation_id

    @property
    def invocation_id(self) -> str:
        return self._invocation_id

    @property
    def thread_local_storage(self) -> Any:
        return self._thread_local

    @property
    def function_name(self) -> str:
        return self._function_name

    @property
    def function_directory(self) -> str:
        return self._function_directory

    @property
    def trace_context(self) -> azf_abc.TraceContext:
        return _TraceContext()

    @property
    def retry_context(self) -> azf_abc.RetryContext:
        return _RetryContext()


class Invoker:
    """Calls user functions; owns the one event loop that ``async def`` functions share."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="devhost-asyncio", daemon=True)
        self._thread.start()

    def invoke(self, function: FunctionInfo, trigger_value: Any, reason: str) -> Any:
        """Run ``function`` with its trigger value; return its result, re-raise what it raises."""
        invocation_id = str(uuid.uuid4())
        kwargs = self._arguments(function, trigger_value, invocation_id)
        logger.info("Executing 'Functions.%s' (Reason='%s', Id=%s)", function.name, reason, invocation_id)
        started = time.perf_counter()
        outcome = "Failed"
        try:
            if inspect.iscoroutinefunction(function.user_function):
                future = asyncio.run_coroutine_threadsafe(function.user_function(**kwargs), self._loop)
                result = future.result()
            else:
                result = function.user_function(**kwargs)
            outcome = "Succeeded"
            return result
        except Exception:
            logger.exception(
                "Exception while executing function: Functions.%s (Id=%s)", function.name, invocation_id
            )
            raise
        finally:
            elapsed_ms = (time.perf_counter() - started) * 1000
            logger.info(
                "Executed 'Functions.%s' (%s, Id=%s, Duration=%.0fms)",
                function.name,
                outcome,
                invocation_id,
                elapsed_ms,
            )

    def invoke_logged(self, function: FunctionInfo, trigger_value: Any, reason: str) -> bool:
        """Like ``invoke`` for triggers that only need to know success: False when the function raised
        (the invoker has logged the traceback already)."""
        try:
            self.invoke(function, trigger_value, reason)
        except Exception:
            return False
        return True

    @staticmethod
    def _arguments(function: FunctionInfo, trigger_value: Any, invocation_id: str) -> dict[str, Any]:
        kwargs: dict[str, Any] = {}
        for name in inspect.signature(function.user_function).parameters:
            if name == function.trigger_name:
                kwargs[name] = trigger_value
            elif name == "context":
                kwargs[name] = InvocationContext(invocation_id, function.name, function.directory)
        return kwargs

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=2)


def app_directory(module_spec: str) -> str:
    """The directory of the app's module file (``function_directory`` in the context)."""
    module = importlib.import_module(module_spec.partition(":")[0])
    module_file = getattr(module, "__file__", None)
    return str(Path(module_file).resolve().parent) if module_file else os.getcwd()
