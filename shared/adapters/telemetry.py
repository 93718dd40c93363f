"""OpenTelemetry: a span per trigger invocation, and the service's metrics.

Configured once per process, on the first invocation, never at import (``configure``):

- ``APPLICATIONINSIGHTS_CONNECTION_STRING`` set (the deployment sets it): Azure Monitor's distro
  (``azure-monitor-opentelemetry``, imported then), which also traces the Azure SDKs' calls (Key Vault,
  Tables, Queues, Event Grid) and ``requests`` (the webhook rotator) as child spans;
- else ``TELEMETRY_CONSOLE=true`` (``make run``): the OpenTelemetry SDK printing spans and metrics to stdout;
- else nothing: every span and instrument is OpenTelemetry's no-op.

Metrics come from two places. Every audit record the service appends passes through ``observe_records``
(the trail's observer, wired by bootstrap): rotations by result and rotator, stalls, expiries by
threshold, revocations by state, break-glass, tamper alarms and appends are counted from what is on
record, so a metric never says what the trail does not. The timers add, counted per run, what no record
says: the sweep's duration and the secrets it scanned and found due, the requests waiting for approvals,
the breaks each verify found (``Metrics``; per-run counters, not gauges: a gauge keeps the last value an
instance saw). No attribute ever carries a value; secret names are left out of metrics (their
cardinality is the fleet's), only vaults, results, rotators, states and thresholds.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from functools import cached_property
from typing import TYPE_CHECKING, Any

from shared.config import Settings, TelemetrySettings
from shared.domain.audit import Action, AuditEvent, Result

if TYPE_CHECKING:
    from opentelemetry.metrics import MeterProvider
    from opentelemetry.trace import TracerProvider

logger = logging.getLogger(__name__)

#: The instrumentation scope of every span and instrument of the service.
SCOPE = "secret_lifecycle"
PREFIX = "secret_lifecycle."

#: Records counted as a revocation reaching a state (their success).
REVOCATION_STATES = {
    Action.REVOCATION_REQUESTED: "requested",
    Action.REVOCATION_APPROVED: "approved",
    Action.REVOCATION_REJECTED: "rejected",
    Action.REVOCATION_CANCELLED: "cancelled",
    Action.REVOCATION_EXPIRED: "expired",
    Action.REVOKED: "executed",
    Action.BREAK_GLASS: "break_glass",
}
#: Records counted as a rotation's outcome.
ROTATION_RESULTS = {
    Action.ROTATED: "rotated",
    Action.ROTATION_FAILED: "failed",
    Action.ROTATION_SKIPPED: "skipped",
}
#: Records that are an alarm about the stored state or the trail.
TAMPER_ALARMS = frozenset({Action.STATE_TAMPERED, Action.TAMPERING_DETECTED})


class Metrics:
    """The service's instruments, over one MeterProvider."""

    def __init__(self, provider: MeterProvider | None = None) -> None:
        from opentelemetry import metrics

        meter = (provider or metrics.get_meter_provider()).get_meter(SCOPE)
        counter, histogram = meter.create_counter, meter.create_histogram
        self.rotations = counter(
            PREFIX + "rotations",
            "{rotation}",
            "Rotation outcomes on record: rotated, failed_attempt (retried), gave_up, skipped; by rotator",
        )
        self.rotation_duration = histogram(
            PREFIX + "rotation.duration", "s", "Time to handle one rotation request, by result"
        )
        self.stalled = counter(
            PREFIX + "rotations.stalled", "{secret}", "Due secrets that stalled (once each)"
        )
        self.sweep_duration = histogram(PREFIX + "sweep.duration", "s", "Time of one vault's rotation sweep")
        self.scanned = counter(PREFIX + "sweep.secrets_scanned", "{secret}", "Secrets listed, per sweep")
        self.due = counter(PREFIX + "sweep.secrets_due", "{secret}", "Managed secrets found due, per sweep")
        self.expiries = counter(
            PREFIX + "expiries", "{version}", "Expiry warnings and expiries, by threshold"
        )
        self.revocations = counter(PREFIX + "revocations", "{transition}", "Revocations reaching a state")
        self.approvals_waiting = counter(
            PREFIX + "revocations.waiting",
            "{request}",
            "Requests waiting for approvals, per expiry run (every 5 minutes), by past_half_ttl",
        )
        self.appends = counter(
            PREFIX + "audit.appends", "{record}", "Audit records appended, by action and result"
        )
        self.verify_breaks = counter(
            PREFIX + "audit.verify_breaks", "{break}", "Breaks found, per daily verify"
        )
        self.tamper_alarms = counter(PREFIX + "tamper_alarms", "{alarm}", "Tampering found in state or trail")

    def observe(self, events: Sequence[AuditEvent]) -> None:
        """Count what these appended records say."""
        for event in events:
            self._observe(event)

    def _observe(self, event: AuditEvent) -> None:
        action, result, vault = event.action, event.result, event.vault
        self.appends.add(1, {"action": action.value, "result": result.value})
        details = event.details
        if action in ROTATION_RESULTS and result in (Result.SUCCESS, Result.FAILURE):
            attributes = {"result": _rotation_result(event), "rotator": _rotator(details), "vault": vault}
            self.rotations.add(1, attributes)
        elif action == Action.ROTATION_STALLED:
            self.stalled.add(1, {"vault": vault})
        elif action in (Action.EXPIRY_WARNING, Action.SECRET_EXPIRED) and result == Result.SUCCESS:
            expired = action == Action.SECRET_EXPIRED
            threshold = "expired" if expired else str(details.get("threshold_days", "?"))
            self.expiries.add(1, {"threshold": threshold[:8], "vault": vault})
        elif action in REVOCATION_STATES and result == Result.SUCCESS:
            # An approval is one of several: the request reaches "approved" with the one that completes it.
            if action != Action.REVOCATION_APPROVED or details.get("status") == "approved":
                self.revocations.add(1, {"state": REVOCATION_STATES[action], "vault": vault})
        elif action == Action.REVOKED and result == Result.FAILURE:
            self.revocations.add(1, {"state": "execute_failed", "vault": vault})
        if action in TAMPER_ALARMS:
            self.tamper_alarms.add(1, {"kind": action.value})


def _rotation_result(event: AuditEvent) -> str:
    """rotated; gave_up (the poison queue: the request ended); failed_attempt (one attempt, retried by the
    queue, or a write the vault refused); skipped (also a request that joined another's rotation)."""
    if event.action == Action.ROTATED:
        return "rotated" if event.result == Result.SUCCESS else "failed_attempt"
    if event.action == Action.ROTATION_FAILED:
        return "gave_up" if "gave_up_after" in event.details else "failed_attempt"
    return "skipped"


def _rotator(details: Mapping[str, Any]) -> str:
    """The rotator a record names (a failure's record may name none)."""
    return str(details.get("rotator") or "unknown")[:32]


class Telemetry:
    """A tracer and the metrics, over the providers given (the global ones by default)."""

    def __init__(
        self, tracer_provider: TracerProvider | None = None, meter_provider: MeterProvider | None = None
    ):
        self._tracer_provider = tracer_provider
        self._meter_provider = meter_provider

    @cached_property
    def metrics(self) -> Metrics:
        return Metrics(self._meter_provider)

    @cached_property
    def _tracer(self) -> Any:
        from opentelemetry import trace

        return (self._tracer_provider or trace.get_tracer_provider()).get_tracer(SCOPE)

    @contextmanager
    def invocation(
        self, function: str, trigger: str, correlation_id: str | None, context: Any = None
    ) -> Iterator[Any]:
        """The span of one trigger invocation (``trigger``: http, timer, queue, eventgrid), named by the
        function, carrying the correlation id its records carry, and a child of the host's span when
        ``context`` (the invocation's ``func.Context``) carries the host's trace context: one operation in
        Application Insights. An exception is recorded on it (and raised on)."""
        from opentelemetry import trace
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        attributes = {"faas.name": function, "faas.trigger": trigger}
        if correlation_id:
            attributes["faas.invocation_id"] = correlation_id
            attributes["secret_lifecycle.correlation_id"] = correlation_id
        carrier: dict[str, str] = {}
        host = getattr(context, "trace_context", None)
        traceparent = getattr(host, "trace_parent", None)
        if traceparent:
            carrier["traceparent"] = str(traceparent)
            carrier["tracestate"] = str(getattr(host, "trace_state", "") or "")
        parent = TraceContextTextMapPropagator().extract(carrier) if carrier else None
        kind = {"http": trace.SpanKind.SERVER, "timer": trace.SpanKind.INTERNAL}.get(
            trigger, trace.SpanKind.CONSUMER
        )
        with self._tracer.start_as_current_span(
            function, context=parent, kind=kind, attributes=attributes
        ) as span:
            yield span


_lock = threading.Lock()
_current: Telemetry | None = None


def configure(settings: TelemetrySettings | None = None) -> Telemetry:
    """The process's telemetry, configured on first use from the settings (the environment's by default).
    Never raises: a telemetry that cannot be configured is logged and left a no-op."""
    global _current  # noqa: PLW0603 - the one telemetry of the process
    current = _current
    if current is not None:  # every call after the first: no lock
        return current
    with _lock:
        if _current is not None:
            return _current
        try:
            chosen = settings if settings is not None else Settings().telemetry
            if chosen.connection_string:
                _azure_monitor(chosen.connection_string)
            elif chosen.console:
                _console()
        except Exception:  # telemetry never takes a function down
            logger.exception("telemetry could not be configured; spans and metrics are not exported")
        _current = Telemetry()
        return _current


def use(telemetry: Telemetry | None) -> None:
    """Replace the process's telemetry (tests: over in-memory providers), or drop it (None)."""
    global _current  # noqa: PLW0603
    with _lock:
        _current = telemetry


def observe_records(events: Sequence[AuditEvent]) -> None:
    """The trail's observer: count the appended records. Never raises."""
    try:
        configure().metrics.observe(events)
    except Exception:
        logger.exception("audit records could not be counted")


def _azure_monitor(connection_string: str) -> None:
    from azure.monitor.opentelemetry import configure_azure_monitor

    # The Azure SDKs' calls (the distro's azure_sdk instrumentation) and requests' are child spans. The
    # app's logs already reach Application Insights through the Functions host: the distro's log export is
    # given a logger nothing writes to, so no line arrives twice.
    configure_azure_monitor(
        connection_string=connection_string,
        logger_name=SCOPE,
        instrumentation_options={"azure_sdk": {"enabled": True}},
    )


def _console() -> None:
    from azure.core.settings import settings as azure_settings
    from opentelemetry import metrics, trace
    from opentelemetry.sdk.metrics import MeterProvider as SdkMeterProvider
    from opentelemetry.sdk.metrics.export import ConsoleMetricExporter, PeriodicExportingMetricReader
    from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
    from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor

    tracer_provider = SdkTracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
    trace.set_tracer_provider(tracer_provider)
    reader = PeriodicExportingMetricReader(ConsoleMetricExporter(), export_interval_millis=60_000)
    metrics.set_meter_provider(SdkMeterProvider(metric_readers=[reader]))
    azure_settings.tracing_enabled = True  # azure-core's own OpenTelemetry spans for every SDK call
    from opentelemetry.instrumentation.requests import RequestsInstrumentor

    RequestsInstrumentor().instrument()  # the webhook rotator's calls, as the distro does in Azure


@contextmanager
def invocation(function: str, trigger: str, correlation_id: str | None, context: Any = None) -> Iterator[Any]:
    """The span of one trigger invocation on the process's telemetry (configured on first use)."""
    with configure().invocation(function, trigger, correlation_id, context) as span:
        yield span


def answered(span: Any, status_code: int) -> None:
    """An HTTP invocation's answer on its span: a 5xx is an error (the function caught what failed and
    answered problem+json; the span would otherwise look successful)."""
    span.set_attribute("http.response.status_code", status_code)
    if status_code >= 500:
        from opentelemetry.trace import Status, StatusCode

        span.set_status(Status(StatusCode.ERROR, f"answered {status_code}"))


def metrics() -> Metrics:
    """The process's instruments (configured on first use)."""
    return configure().metrics
