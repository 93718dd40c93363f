"""Operate it: one rotation and one revocation through the registered functions, read back as the spans
and metrics OpenTelemetry exports (in-memory exporters over the SDK, as Azure Monitor's distro would
configure it in Azure)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import azure.functions as func
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from shared.adapters import telemetry
from shared.domain.audit import Action, AuditEvent, Result
from shared.domain.identity import encode_principal
from shared.domain.policy import RotationPolicy, SecretKind
from tests.fakes import RecordingRotationRequests
from tests.functions.conftest import Context, FakeContainer, call_http

NAME = "dispatch-api-key"
POLICY = RotationPolicy(SecretKind.API_KEY, timedelta(days=30), None, "dispatch-api")
OPERATOR = encode_principal("oid-operator", ["Secrets.Rotation.Operate"], name="olga")
REQUESTER = encode_principal("dispatch-app", ["Secrets.Revocation.Request"], app=True)
APPROVERS = [
    encode_principal(f"oid-approver-{i}", ["Secrets.Revocation.Approve"], name=f"a{i}") for i in (1, 2)
]
VALUE = "initial-value-4f1c9e"  # looked for in every exported attribute
EXECUTOR = encode_principal("oid-exec", ["Secrets.Revocation.Execute"], name="eve")
JSON = {"content-type": "application/json"}


@dataclass(frozen=True)
class TraceContext:
    """What the host puts in ``func.Context.trace_context``: its span's W3C trace parent."""

    trace_parent: str
    trace_state: str
    attributes: dict[str, str]


@dataclass(frozen=True)
class HostContext:
    invocation_id: str
    trace_context: TraceContext
    function_name: str = "test"


@pytest.fixture
def exported() -> Iterator[tuple[InMemorySpanExporter, InMemoryMetricReader]]:
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    reader = InMemoryMetricReader()
    telemetry.use(telemetry.Telemetry(tracer_provider, MeterProvider(metric_readers=[reader])))
    yield spans, reader
    telemetry.use(None)


def points(reader: InMemoryMetricReader) -> dict[str, list[Any]]:
    """Every metric's data points by name."""
    found: dict[str, list[Any]] = {}
    data = reader.get_metrics_data()
    assert data is not None
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                found.setdefault(metric.name, []).extend(metric.data.data_points)
    return found


def counted(found: dict[str, list[Any]], name: str, **attributes: Any) -> float:
    return sum(p.value for p in found.get(name, []) if attributes.items() <= dict(p.attributes).items())


def test_one_rotation_and_one_revocation_as_spans_and_metrics(
    functions: dict[str, Any], use_container: Any, exported: tuple[InMemorySpanExporter, InMemoryMetricReader]
) -> None:
    spans, reader = exported
    fake: FakeContainer = use_container(FakeContainer())
    fake.secret_store.set_value(NAME, VALUE, content_type=None, tags=POLICY.to_tags())

    def http(name: str, principal: str, context: str, **request: Any) -> dict[str, Any]:
        status, body, _ = call_http(
            functions[name], Context(context), principal=principal, url="http://h/api/x", method="POST",
            headers=JSON, **request,
        )  # fmt: skip
        assert status < 300, body
        return body

    http("secrets_rotate", OPERATOR, "inv-rotate", route={"name": NAME}, body={"force": True})
    queue = fake.rotation_queue
    assert isinstance(queue, RecordingRotationRequests)
    [request] = queue.sent
    functions["rotate_secret"].get_user_function()(
        func.QueueMessage(body=request.to_json()), Context("inv-q")
    )
    # Severity low: two approvals (only the second makes the request approved).
    body = {"secret_name": NAME, "reason": "COMPROMISE_SUSPECTED", "severity": "low", "justification": "x"}
    made = http("revocations_request", REQUESTER, "inv-req", body=body)
    for number, approver in enumerate(APPROVERS):
        http("revocations_approve", approver, f"inv-approve-{number}", route={"id": made["id"]})
    done = http("revocations_execute", EXECUTOR, "inv-exec", route={"id": made["id"]})
    assert done["status"] == "executed"

    # A span per invocation, named by its function, with the correlation id its records carry.
    by_name = {s.name: s for s in spans.get_finished_spans()}
    expected = {
        "secrets_rotate": ("http", "inv-rotate"), "rotate_secret": ("queue", "inv-q"),
        "revocations_request": ("http", "inv-req"), "revocations_approve": ("http", "inv-approve-1"),
        "revocations_execute": ("http", "inv-exec"),
    }  # fmt: skip
    for name, (trigger, cid) in expected.items():
        attributes = dict(by_name[name].attributes or {})
        assert (attributes["faas.trigger"], attributes["secret_lifecycle.correlation_id"]) == (trigger, cid)
    assert dict(by_name["revocations_request"].attributes or {})["http.response.status_code"] == 201
    # The queue invocation's span also names the request's correlation id, which its records carry.
    rotate_span = dict(by_name["rotate_secret"].attributes or {})
    assert rotate_span["secret_lifecycle.request.correlation_id"] == request.correlation_id
    assert {e.action.value for e in fake.audit_log.events if e.correlation_id == request.correlation_id} >= {
        "ROTATION_REQUESTED", "ROTATED",
    }  # fmt: skip

    found = points(reader)
    assert (
        counted(found, "secret_lifecycle.rotations", result="rotated", rotator="key-vault", vault="fleet")
        == 1
    )
    [duration] = found["secret_lifecycle.rotation.duration"]
    assert duration.count == 1 and dict(duration.attributes)["result"] == "rotated"
    for state in ("requested", "approved", "executed"):
        assert counted(found, "secret_lifecycle.revocations", state=state, vault="fleet") == 1, state
    appended = counted(found, "secret_lifecycle.audit.appends")
    assert appended == len(fake.audit_log.events)  # every record counted once
    assert counted(found, "secret_lifecycle.audit.appends", action="ROTATED", result="success") == 1
    # No value, no secret name in any metric attribute; no value in any span.
    exported_text = str([dict(p.attributes) for ps in found.values() for p in ps])
    assert NAME not in exported_text and VALUE not in exported_text
    assert VALUE not in str([dict(s.attributes or {}) for s in spans.get_finished_spans()])


def test_a_span_joins_the_hosts_trace_and_a_5xx_is_an_error(
    functions: dict[str, Any], use_container: Any, exported: tuple[InMemorySpanExporter, InMemoryMetricReader]
) -> None:
    spans, _ = exported
    fake: FakeContainer = use_container(FakeContainer())
    fake.secret_store.available = False  # the vault does not answer: 503
    host_trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    context = HostContext("inv-503", TraceContext(f"00-{host_trace}-00f067aa0ba902b7-01", "", {}))
    status, _, _ = call_http(
        functions["secrets_status"], context, principal=OPERATOR, method="GET", url="http://h/api/x",
        route={"name": NAME},
    )  # fmt: skip
    assert status == 503
    [span] = [s for s in spans.get_finished_spans() if s.name == "secrets_status"]
    assert format(span.context.trace_id, "032x") == host_trace  # one operation with the host's request
    assert span.status.status_code == StatusCode.ERROR and span.kind == SpanKind.SERVER


def test_the_metrics_count_transitions_not_attempts(
    exported: tuple[InMemorySpanExporter, InMemoryMetricReader],
) -> None:
    _, reader = exported
    vault, now = "fleet", datetime.now(UTC)

    def event(action: Action, result: Result, **details: Any) -> AuditEvent:
        return AuditEvent(action=action, vault=vault, time=now, result=result, details=details)

    telemetry.observe_records([
        event(Action.ROTATION_FAILED, Result.FAILURE, step="promote", attempt=1),  # retried by the queue
        event(Action.ROTATION_FAILED, Result.FAILURE, gave_up_after=5),  # the request's end
        event(Action.EXPIRY_WARNING, Result.FAILURE),  # a check that failed: no expiry
        event(Action.EXPIRY_WARNING, Result.SUCCESS, threshold_days=7),
        event(Action.REVOCATION_APPROVED, Result.SUCCESS, status="pending"),  # one of two approvals
        event(Action.REVOCATION_APPROVED, Result.SUCCESS, status="approved"),
        event(Action.REVOKED, Result.FAILURE),
    ])  # fmt: skip
    found = points(reader)
    assert counted(found, "secret_lifecycle.rotations", result="failed_attempt", rotator="unknown") == 1
    assert counted(found, "secret_lifecycle.rotations", result="gave_up") == 1
    assert counted(found, "secret_lifecycle.expiries") == 1
    assert counted(found, "secret_lifecycle.expiries", threshold="7") == 1
    assert counted(found, "secret_lifecycle.revocations", state="approved") == 1
    assert counted(found, "secret_lifecycle.revocations", state="execute_failed") == 1
    assert counted(found, "secret_lifecycle.audit.appends") == 7
