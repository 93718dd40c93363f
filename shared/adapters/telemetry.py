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
record, so a metric never says what the trail does not. The timers add what no record says: the sweep's
duration and the secrets it scanned, due and stalled counts, the approvals waiting, the breaks of the last
verify (``Metrics``). No attribute ever carries a value; secret names are left out of metrics (their
cardinality is the fleet's), only vaults, results, rotators, states and thresholds.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Sequence
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
        counter, histogram, gauge = meter.create_counter, meter.create_histogram, meter.create_gauge
        self.rotations = counter(
            PREFIX + "rotations", "{rotation}", "Rotation outcomes, by result and rotator"
        )
        self.rotation_duration = histogram(
            PREFIX + "rotation.duration", "s", "Time to handle one rotation request, by result"
        )
        self.stalled = counter(
            PREFIX + "rotations.stalled", "{secret}", "Due secrets that stalled (once each)"
        )
        self.sweep_duration = histogram(PREFIX + "sweep.duration", "s", "Time of one vault's rotation sweep")
        self.scanned = counter(PREFIX + "sweep.secrets_scanned", "{secret}", "Secrets listed by the sweeps")
        self.due = gauge(PREFIX + "secrets.due", "{secret}", "Managed secrets due at the last sweep")
        self.stalled_now = gauge(
            PREFIX + "secrets.stalled", "{secret}", "Due secrets stalled at the last sweep"
        )
        self.expiries = counter(
            PREFIX + "expiries", "{version}", "Expiry warnings and expiries, by threshold"
        )
        self.revocations = counter(PREFIX + "revocations", "{transition}", "Revocations reaching a state")
        self.approvals_waiting = gauge(
            PREFIX + "revocations.waiting",
            "{request}",
            "Requests waiting for approvals, and past half their TTL",
        )
        self.appends = counter(
            PREFIX + "audit.appends", "{record}", "Audit records appended, by action and result"
        )
        self.verify_breaks = gauge(
            PREFIX + "audit.verify_breaks", "{break}", "Breaks found by the last verify"
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
            outcome = (
                ROTATION_RESULTS[action] if action != Action.ROTATED or result == Result.SUCCESS else "failed"
            )
            rotator = str(details.get("rotator") or "key-vault")[:32]
            self.rotations.add(1, {"result": outcome, "rotator": rotator, "vault": vault})
        elif action == Action.ROTATION_STALLED:
            self.stalled.add(1, {"vault": vault})
        elif action in (Action.EXPIRY_WARNING, Action.SECRET_EXPIRED):
            threshold = (
                "expired" if action == Action.SECRET_EXPIRED else str(details.get("threshold_days", "?"))
            )
            self.expiries.add(1, {"threshold": threshold[:8], "vault": vault})
        elif action in REVOCATION_STATES and result == Result.SUCCESS:
            self.revocations.add(1, {"state": REVOCATION_STATES[action], "vault": vault})
        if action in TAMPER_ALARMS:
            self.tamper_alarms.add(1, {"kind": action.value})


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
    def invocation(self, function: str, trigger: str, correlation_id: str | None) -> Iterator[Any]:
        """The span of one trigger invocation (``trigger``: http, timer, queue, eventgrid), named by the
        function, carrying the correlation id its records carry; an exception is recorded on it (and
        raised on)."""
        attributes = {"faas.name": function, "faas.trigger": trigger}
        if correlation_id:
            attributes["faas.invocation_id"] = correlation_id
            attributes["secret_lifecycle.correlation_id"] = correlation_id
        with self._tracer.start_as_current_span(function, attributes=attributes) as span:
            yield span


_lock = threading.Lock()
_current: Telemetry | None = None


def configure(settings: TelemetrySettings | None = None) -> Telemetry:
    """The process's telemetry, configured on first use from the settings (the environment's by default).
    Never raises: a telemetry that cannot be configured is logged and left a no-op."""
    global _current  # noqa: PLW0603 - the one telemetry of the process
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
def invocation(function: str, trigger: str, correlation_id: str | None) -> Iterator[Any]:
    """The span of one trigger invocation on the process's telemetry (configured on first use)."""
    with configure().invocation(function, trigger, correlation_id) as span:
        yield span


def metrics() -> Metrics:
    """The process's instruments (configured on first use)."""
    return configure().metrics
